"""Issue 13's acceptance for the spec: a new metric is one declaration in the contract plus the
collection part that yields its points; a new threshold is one declaration in the spec plus the
rule that reads it. Everything else (docs, OTLP, /metrics, Helm, drift tests) follows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource

from agent import contract as c
from agent import spec
from agent.aggregate.points import PointSet
from agent.docs import metrics_markdown
from agent.export.producer import Producer
from agent.export.state import MetricsState
from agent.export.text import render

ROOT = Path(__file__).resolve().parent.parent
PRODUCERS = ("agent/collect/parts/*/__init__.py", "agent/aggregate/*.py", "agent/export/state.py")
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
    (diagnose: ``t.<name>``; alerts: ``[[name]]``; dashboards: ``spec.X["name"]``) and, for a
    diagnose threshold, until ``config.Thresholds`` has the field with the same default."""
    readers = {spec.Use.DIAGNOSE: "agent/diagnose", spec.Use.ALERTS: "agent/alert_rules.py",
               spec.Use.DASHBOARDS: "dashboards/build.py"}
    for t in (*spec.DIAGNOSE_THRESHOLDS, *spec.ALERT_THRESHOLDS, *spec.PANEL_THRESHOLDS):
        for use in t.used_in:
            path = ROOT / readers[use]
            text = "\n".join(p.read_text("utf-8") for p in
                             (sorted(path.glob("*.py")) if path.is_dir() else [path]))
            assert t.name in text, (t.name, use)
