"""Builds the Grafana dashboards from the metric contract (``python -m dashboards.build``).

Every metric name comes from :mod:`agent.contract`, every threshold from :mod:`agent.spec`;
the committed JSON files are this module's output, and ``tests/test_dashboards.py`` fails
when they differ. ``--check`` reports stale files without writing them. One module per
dashboard (``overview``, ``drilldown``, ``pgbouncer``) made of the panel kinds in ``panels``
and the measures they share in ``measures``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gm

from agent.alert_rules import RUNBOOK_BASE

HERE = Path(__file__).resolve().parent
if not __package__:  # run as a file (python dashboards/build.py): find the package as -m does
    sys.path.insert(0, str(HERE.parent))

from dashboards import drilldown, links, overview, pgbouncer, promql  # noqa: E402

__all__ = ["DASHBOARDS", "DRILLDOWN_UID", "NONE_SET", "PGBOUNCER_DASHBOARDS", "RUNBOOK_BASE",
           "main", "render", "rendered"]

DRILLDOWN_UID = links.DRILLDOWN_UID
NONE_SET = promql.NONE_SET
DASHBOARDS = {
    "connections-overview.json": overview.connections_overview,
    "application-drilldown.json": drilldown.application_drilldown,
    "pgbouncer-pools.json": pgbouncer.pgbouncer_pools,
}
PGBOUNCER_DASHBOARDS = frozenset({"pgbouncer-pools.json"})
"""Dashboards of PgBouncer targets; the others read PostgreSQL targets' metrics."""


def _finish(model: gm.Dashboard) -> gm.Dashboard:
    """Stable panel ids, and no interval-variable fields on variables that are no interval.

    Panel ids are 1, 2, ... in layout order, rows' nested panels included. The SDK writes
    ``auto``/``auto_min``/``auto_count`` on every variable; Grafana's published VariableModel
    has no such fields, so the structural check rejects them.
    """
    for variable in (model.templating.list_val or []) if model.templating else []:
        if variable.type_val != gm.VariableType.INTERVAL:
            variable.auto = variable.auto_min = variable.auto_count = None
    next_id = 1
    for panel in model.panels or []:
        panel.id_val = next_id
        next_id += 1
        for nested in getattr(panel, "panels", None) or []:
            nested.id_val = next_id
            next_id += 1
    return model


def render(name: str) -> str:
    """The JSON text of one dashboard, exactly as committed."""
    model = _finish(DASHBOARDS[name]().build())
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def rendered() -> dict[str, dict[str, Any]]:
    """Every dashboard as parsed JSON, by file name."""
    return {name: json.loads(render(name)) for name in DASHBOARDS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed file differs, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path: Path = args.out / name
        text = render(name)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    if args.check and stale:
        print("stale (run python -m dashboards.build): " + ", ".join(map(str, stale)),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
