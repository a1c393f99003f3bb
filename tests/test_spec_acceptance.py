"""Issue 13's acceptance for the spec: a new metric is one declaration in the contract plus one
collection part folder that yields its points; a new threshold is one declaration in the spec
plus the rule that reads it. Everything else (docs, OTLP, /metrics, Helm, drift tests) follows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from agent_e2e import clean_env
from pooler_support import LocalBouncer

from agent import contract as c
from agent import spec
from agent.collect.part import PartError, discover
from agent.demo.server import LocalServer
from agent.demo.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
PRODUCERS = ("agent/collect/parts/*/__init__.py", "agent/collect/pgbouncer/parts/*/__init__.py",
             "agent/aggregate/*.py", "agent/export/state.py")
"""Where collected data becomes points: the collection parts' point functions and the agent's
own counters."""


def _constant(metric: c.MetricSpec) -> str:
    return next(name for name, value in vars(c).items() if value is metric)


@pytest.mark.parametrize("metric", c.METRICS, ids=lambda m: m.name)
def test_every_declared_metric_is_produced_by_a_collection_part(metric: c.MetricSpec) -> None:
    if metric.instrument is c.Instrument.HISTOGRAM:  # MetricsState.record_duration's one
        assert metric is c.POLL_DURATION
        return
    constant = _constant(metric)
    producers = [p.relative_to(ROOT).as_posix() for g in PRODUCERS for p in ROOT.glob(g)
                 if re.search(rf"(?<![\w.])(?:c\.)?{constant}\b", p.read_text("utf-8"))]
    assert producers, f"{metric.name} is declared but nothing produces its points"


NEW_PART_SQL = """\
-- Client backends by wait event type, 'none' when not waiting (PostgreSQL 12+).
SELECT coalesce(wait_event_type, 'none') AS wait_event_type, count(*)::int AS count
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 1
ORDER BY 1
"""
NEW_PART = """\
\"\"\"Client backends by wait event type.\"\"\"

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .... import contract as c
from ...part import Part, Point


@dataclass(frozen=True, slots=True)
class WaitEventTypeCount:
    wait_event_type: str
    count: int


def _points(rows: tuple[WaitEventTypeCount, ...]) -> Iterable[Point]:
    for row in rows:
        yield c.BACKEND_WAIT_EVENT_TYPE, (("wait_event_type", row.wait_event_type),), row.count


PART = Part("wait_event_types", WaitEventTypeCount, points=_points)
"""
DECLARATION = """\
BACKEND_WAIT_EVENT_TYPE = _spec(
    "postgresql.backend.wait_event_type.count", U, "{connection}", (*T, "wait_event_type"),
    "Client backends by wait event type ('none': not waiting).",
)

"""
CONSOLE_PART = """\
\"\"\"``SHOW LISTS``: the sizes of PgBouncer's internal lists.\"\"\"

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..... import contract as c
from ....part import ConsolePart, ConsoleRows, Index, Point


@dataclass(frozen=True, slots=True)
class ListSize:
    list: str
    items: int


def _lists(rows: ConsoleRows, ix: Index) -> tuple[ListSize, ...]:
    return tuple(ListSize(r[ix["list"]], r[ix["items"]]) for r in rows)


def _points(rows: tuple[ListSize, ...]) -> Iterable[Point]:
    for row in rows:
        yield c.POOLER_LIST_ITEMS, (("list", row.list),), row.items


PART = ConsolePart("lists", ListSize, "LISTS", _lists, _points)
"""
CONSOLE_DECLARATION = """\
POOLER_LIST_ITEMS = _spec(
    "pgbouncer.list.items", U, "{item}", (*T, "list"),
    "Items in each of PgBouncer's internal lists.",
)

"""
POLL = """\
import sys
from opentelemetry.sdk.resources import Resource
import agent
from agent.aggregate.attribution import attribute
from agent.aggregate.points import points
from agent.aggregate.pooler import pooler_points
from agent.collect.client import TargetClient
from agent.collect.pgbouncer.console import ConsoleClient
from agent.config import Target
from agent.docs import metrics_markdown
from agent.export.producer import Producer
from agent.export.state import MetricsState
from agent.export.text import render

print(agent.__file__)
kind, dsn = sys.argv[1:]
client = (TargetClient if kind == "server" else ConsoleClient)(Target("db1", dsn))
try:
    snapshot = client.poll()
finally:
    client.close()
state = MetricsState()
state.publish("db1", points(attribute(snapshot)) if kind == "server" else pooler_points(snapshot))
(resource,) = Producer(state, Resource.create()).get_metrics_data().resource_metrics
print([(m.name, m.unit) for m in resource.scope_metrics[0].metrics])
print(render(Producer(state, Resource.create())).decode())
print(metrics_markdown())
"""


def polled_with_part(tmp_path: Path, parts: str, name: str, files: dict[str, str],
                     declaration: str, kind: str, dsn: str) -> tuple[str, str]:
    """Poll a real target with a copy of the package holding one more part folder (``files``
    under ``parts/name``) and one more metric in the contract (its declaration and its place in
    METRICS), nothing else; the OTLP metrics (name, unit) and the /metrics text plus docs."""
    shutil.copytree(ROOT / "agent", tmp_path / "agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    folder = tmp_path / "agent" / parts / name
    folder.mkdir()
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")
    contract = tmp_path / "agent" / "contract.py"
    metrics = "METRICS: tuple[MetricSpec, ...] = (\n"
    text = contract.read_text(encoding="utf-8")
    assert text.count(metrics) == 1
    constant = declaration.split(" =", 1)[0]
    contract.write_text(text.replace(metrics, f"{declaration}{metrics}    {constant},\n"),
                        encoding="utf-8")
    run = _in(tmp_path, "-c", POLL, kind, dsn)
    assert run.returncode == 0, run.stderr
    where, otlp, out = run.stdout.split("\n", 2)
    assert where == str(tmp_path / "agent" / "__init__.py")
    return otlp, out


def test_a_new_part_is_one_folder_and_one_declaration(tmp_path: Path, pg: LocalServer,
                                                      workload: Workload) -> None:
    """A new server part: polling a real server publishes its points on /metrics and OTLP,
    and the docs list its metric."""
    workload.idle(3, "acceptance")
    otlp, out = polled_with_part(
        tmp_path, "collect/parts", "wait_event_types",
        {"120000.sql": NEW_PART_SQL, "__init__.py": NEW_PART}, DECLARATION, "server", pg.dsn())
    assert "('postgresql.backend.wait_event_type.count', '{connection}')" in otlp
    waiting = {m["type"]: int(float(m["n"])) for m in re.finditer(
        r'^postgresql_backend_wait_event_type_count\{target="db1",wait_event_type="(?P<type>\w+)"\}'
        r" (?P<n>\S+)$", out, re.MULTILINE)}
    assert waiting.get("Client", 0) >= 3 and waiting.get("none", 0) >= 1, out  # idle; the poll
    assert "`postgresql.backend.wait_event_type.count`" in out


def test_a_new_pgbouncer_part_is_one_folder_and_one_declaration(tmp_path: Path,
                                                                pg: LocalServer) -> None:
    """The issue's first test of the rule: a new PgBouncer console part (SHOW LISTS; SHOW STATS
    was the first, now in the tree) on a real PgBouncer, its points on /metrics and OTLP, its
    metric in the docs."""
    with LocalBouncer(pg, pool_mode="transaction", pool_size=2) as bouncer:
        with psycopg.connect(bouncer.dsn(), autocommit=True) as conn:
            conn.execute("SELECT 1")
        otlp, out = polled_with_part(
            tmp_path, "collect/pgbouncer/parts", "lists", {"__init__.py": CONSOLE_PART},
            CONSOLE_DECLARATION, "pgbouncer", bouncer.console_dsn())
    assert "('pgbouncer.list.items', '{item}')" in otlp
    assert re.search(r'^pgbouncer_list_items\{list="used_clients",target="db1"\} 1(\.0)?$',
                     out, re.MULTILINE), out  # the agent's own console connection
    assert "`pgbouncer.list.items`" in out


ABSOLUTE_PART = NEW_PART.replace(".... import contract", "agent import contract").replace(
    "...part", "agent.collect.part")


@pytest.mark.parametrize(("name", "files", "error"), [
    ("wait_event_types", {"__init__.py": ABSOLUTE_PART}, "no <server_version_num>.sql file"),
    ("nopart", {"120000.sql": NEW_PART_SQL, "__init__.py": '"""Declares nothing."""\n'},
     "no PART = Part(...)"),
    ("norow", {"120000.sql": NEW_PART_SQL,
               "__init__.py": "from agent.collect.part import Part\nPART = Part('norow', dict)\n"},
     "PART.row must be a frozen, slotted dataclass"),
], ids=["no-sql", "no-part", "no-row-type"])
def test_a_folder_that_is_not_a_whole_part_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, files: dict[str, str],
        error: str) -> None:
    package = f"fake_parts_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / package / name
    folder.mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PartError, match=re.escape(f"{package}.{name}: {error}")):
        discover(package)


def test_a_threshold_declared_once_is_read_where_it_says() -> None:
    """The spec side of a new threshold; tests/test_spec.py fails until its reader exists
    (diagnose: ``t[spec.NAME]``; alerts: ``[[name]]``; dashboards: ``spec.X["name"]``)."""
    readers = {spec.Use.DIAGNOSE: "agent/diagnose", spec.Use.ALERTS: "agent/alerts",
               spec.Use.DASHBOARDS: "dashboards"}
    for t in (*spec.DIAGNOSE_THRESHOLDS, *spec.ALERT_THRESHOLDS, *spec.PANEL_THRESHOLDS):
        for use in t.used_in:
            path = ROOT / readers[use]
            text = "\n".join(p.read_text("utf-8") for p in
                             (sorted(path.glob("*.py")) if path.is_dir() else [path]))
            read_as = f"spec.{t.name.upper()}" if use is spec.Use.DIAGNOSE else t.name
            assert read_as in text, (t.name, use)


NEW_THRESHOLDS = (
    'WIDGET_AGE = _diagnose("widget_age", 30.0, "seconds", "Age of a widget (this test only).")\n'
    'WIDGET_SHARE = _diagnose("widget_share", 0.5, "ratio", "Share of widgets (this test only).")\n'
)
"""One line per new ``[thresholds]`` key, as a developer adds it to agent/spec.py."""


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package whose spec declares NEW_THRESHOLDS; nothing else is edited."""
    root = tmp_path_factory.mktemp("extended")
    shutil.copytree(ROOT / "agent", root / "agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "sync-chart-assets.py", root / "scripts")
    spec_py = root / "agent" / "spec.py"
    anchor = "\nDIAGNOSE_THRESHOLDS: tuple[Threshold, ...] = tuple(_DIAGNOSE)\n"
    text = spec_py.read_text("utf-8")
    assert text.count(anchor) == 1
    spec_py.write_text(text.replace(anchor, NEW_THRESHOLDS + anchor), "utf-8")
    assert (root / "agent" / "config.py").read_bytes() == (ROOT / "agent" / "config.py"
                                                           ).read_bytes()
    return root


def _in(root: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` importing the package at ``root``; ``config`` goes to ``cfg.toml``."""
    if config is not None:
        (root / "cfg.toml").write_text(config + '\n[[targets]]\ndsn = "host=db1"\n', "utf-8")
    env = clean_env(PYTHONPATH=str(root))
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_new_threshold_is_one_spec_line_away_from_the_config_docs_and_helm(
        extended: Path) -> None:
    shown = _in(extended, "-m", "agent", "check-config", "cfg.toml",
                config="[thresholds]\nwidget_age = 45\n")
    assert shown.returncode == 0, shown.stderr
    assert "widget_age 45.0, widget_share 0.5" in shown.stdout  # effective config, defaults too

    for table, error in (("widget_age = -1", "thresholds.widget_age: expected a number > 0, "
                                             "found -1.0"),
                         ("widget_share = 1.5", "thresholds.widget_share: expected a ratio in "
                                                "(0, 1], found 1.5"),
                         ("widget_agee = 1", "thresholds.widget_agee: unknown key")):
        bad = _in(extended, "-m", "agent", "check-config", "cfg.toml",
                  config=f"[thresholds]\n{table}\n")
        assert bad.returncode == 2, bad.stdout
        assert bad.stderr.strip().splitlines() == [f"pgconn-agent: error: cfg.toml: {error}"]

    docs = _in(extended, "-c", "from agent.docs import thresholds_markdown as m; print(m())")
    assert ("| `widget_age` | 30 | seconds | Age of a widget (this test only). | diagnose |"
            in docs.stdout), docs.stderr
    schema = _in(extended, "-c", "import json, runpy; print(json.dumps(runpy.run_path("
                 "'scripts/sync-chart-assets.py')['_schema_agent_thresholds']()))")
    props = json.loads(schema.stdout)["properties"]
    assert props["widget_share"] == {
        "type": "number", "exclusiveMinimum": 0, "maximum": 1,
        "description": "[thresholds].widget_share (ratio, default 0.5): Share of widgets "
                       "(this test only)."}
