"""Builds the Grafana dashboards from the metric contract.

Every metric name comes from :mod:`agent.contract`, every threshold from :mod:`agent.spec`;
the committed JSON files are this module's output, written (and checked for drift) by
``scripts/generate.py`` with every other generated file. One module per
dashboard (``overview``, ``drilldown``, ``pgbouncer``) made of the panel kinds in ``panels``
and the measures they share in ``measures``.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gm

from agent.alert_rules import RUNBOOK_BASE
from dashboards import drilldown, links, overview, pgbouncer, promql

__all__ = ["DASHBOARDS", "DRILLDOWN_UID", "NONE_SET", "PGBOUNCER_DASHBOARDS", "RUNBOOK_BASE",
           "render", "rendered"]

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
