"""``/metrics``' direct encoder writes exactly what prometheus_client's exposition writes.

The state holds a split fleet (several targets of one server, target series, histograms,
counters) and label values that need escaping; both encoders must agree byte for byte.
"""

from __future__ import annotations

from exposition_reference import reference
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families
from snapshots import DatabaseSessions, WaitCount, group, snapshot

from agent.aggregate.attribution import attribute
from agent.aggregate.fleet import split
from agent.aggregate.points import points
from agent.export.producer import Producer
from agent.export.state import MetricsState
from agent.export.text import render

HOSTILE = ['quote"d', "back\\slash", "new\nline", "ünïcødé ✓", "", "a,b=c}"]


def fleet_state() -> MetricsState:
    state = MetricsState(50)
    groups = [group(app, db=f"db{i % 3}", count=i + 1, addr=f"10.0.0.{i}", opened=i,
                    xact_age=float(i) if i % 2 else None, user=HOSTILE[(i + 1) % 6])
              for i, app in enumerate(HOSTILE)]
    snap = snapshot(groups, databases=tuple(DatabaseSessions(f"db{d}", 10, 1, 2, 3)
                                            for d in range(4)),
                    waits=(WaitCount("db1", 'u"', "new\nline", "Lock", "relation", 2),))
    whole = points(attribute(snap, max_groups=50), max_groups=50)
    for _ in range(2):  # twice: the opened counters move from 0 to their count
        for name, share in split(whole, {"t-a": "db0", "t-b": "db1", "t-c": "db9"}).items():
            state.publish(name, share)
    state.record_duration("t-a", 0.003)
    state.record_duration("t-a", 12.0)
    state.fail("t-c", "timeout")
    state.skipped("t-b")
    return state


def test_the_direct_encoder_writes_what_prometheus_client_writes() -> None:
    producer = Producer(fleet_state(), Resource.create({"service.name": "x"}))
    ours = render(producer)
    assert ours == reference(producer)
    text = ours.decode()
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    assert len(samples) > 50
    assert {s.labels.get("application_name") for s in samples} >= set(HOSTILE) - {""}
    assert any(s.name == "pgconn_agent_poll_duration_seconds_bucket"
               and s.labels["le"] == "+Inf" and s.value == 2 for s in samples)


def test_an_empty_state_renders_nothing() -> None:
    producer = Producer(MetricsState(), Resource.create())
    assert render(producer) == reference(producer) == b""
