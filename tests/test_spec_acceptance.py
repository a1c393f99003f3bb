"""Issue 13's acceptance for the spec: a new metric is one declaration in the contract plus the
collection part that yields its points; a new threshold is one declaration in the spec plus the
rule that reads it. Everything else (docs, OTLP, /metrics, Helm, drift tests) follows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_e2e import clean_env
from opentelemetry.sdk.resources import Resource

from agent import contract as c
from agent import spec
from agent.aggregate.points import PointSet
from agent.docs import metrics_markdown
from agent.export.producer import Producer
from agent.export.state import MetricsState
from agent.export.text import render

ROOT = Path(__file__).resolve().parent.parent
PRODUCERS = ("agent/aggregate/*.py", "agent/export/state.py")
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


def test_a_metric_declared_once_reaches_docs_otlp_and_the_endpoint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    widgets = c.MetricSpec("postgresql.widget.count", c.Instrument.GAUGE, "{widget}",
                           "A metric that exists only in this test.", ("target", "kind"))
    monkeypatch.setattr(c, "METRICS", (*c.METRICS, widgets))
    monkeypatch.setattr(c, "BY_NAME", {**c.BY_NAME, widgets.name: widgets})
    state = MetricsState()
    # What the new collection part yields: its points, named by the declaration.
    state.publish("db1", PointSet({widgets.name: [((("target", "db1"), ("kind", "blue")), 3.0)]},
                                  []))
    producer = Producer(state, Resource.create())
    (resource,) = producer.get_metrics_data().resource_metrics
    (otlp,) = [m for m in resource.scope_metrics[0].metrics if m.name == widgets.name]
    assert (otlp.unit, otlp.description) == ("{widget}", widgets.description)
    assert 'postgresql_widget_count{kind="blue",target="db1"} 3.0' in render(producer).decode()
    assert "`postgresql.widget.count`" in metrics_markdown()


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
