"""The exported state between polls: counters born at zero, bounded, gone with their target."""

from __future__ import annotations

import time

from agent import contract as c
from agent.aggregate.points import Attributes, Points, PointSet
from agent.export.state import MetricsState

T: Attributes = (("target", "db1"),)


def opened(app: str) -> Attributes:
    return (*T, ("application_name", app), ("client_addr", "10.0.0.5"))


def publish(state: MetricsState, *deltas: tuple[str, float]) -> dict[str, float]:
    state.publish("db1", PointSet({m.name: [] for m in c.METRICS},
                                  [(opened(app), n) for app, n in deltas]))
    return {dict(a)["application_name"]: v for a, v in state.observe(c.CONNECTION_OPENED.name)}


def test_a_new_opened_series_starts_at_zero_and_counts_from_the_next_poll() -> None:
    state = MetricsState()
    assert publish(state, ("web", 5.0)) == {"web": 0.0}
    assert publish(state, ("web", 2.0)) == {"web": 7.0}
    assert publish(state, ("api", 1.0)) == {"web": 7.0, "api": 0.0}
    assert publish(state) == {"web": 7.0, "api": 1.0}


def test_opened_series_stay_within_the_cap() -> None:
    state = MetricsState(max_groups=5)
    for i in range(50):
        seen = publish(state, (f"app-{i}", 1.0 + i))
        assert len(seen) <= 5
    assert c.OVERFLOW_VALUE in seen
    assert sum(seen.values()) == sum(1.0 + i for i in range(49))  # the last is still pending


def test_removed_target_leaves_nothing_behind() -> None:
    state = MetricsState()
    publish(state, ("web", 5.0))
    state.record_duration("db1", 0.01)
    state.remove("db1")
    assert all(state.observe(m.name) == [] for m in c.METRICS)
    assert state.durations() == []


def test_a_lower_cap_folds_opened_at_once() -> None:
    state = MetricsState(max_groups=200)
    for i in range(30):
        publish(state, (f"app-{i}", 1.0))
    state.set_max_groups(5)
    seen = {dict(a)["application_name"]: v for a, v in state.observe(c.CONNECTION_OPENED.name)}
    assert len(seen) == 5 and c.OVERFLOW_VALUE in seen
    assert sum(seen.values()) == 29.0  # the last one is still pending


def test_writes_of_a_removed_or_replaced_owner_are_ignored() -> None:
    state, old, new = MetricsState(), object(), object()
    state.claim("db1", old)
    state.remove("db1")
    empty = PointSet({m.name: [] for m in c.METRICS}, [])
    state.publish("db1", empty, owner=old)
    state.fail("db1", "timeout", owner=old)
    state.record_duration("db1", 1.0, owner=old)
    state.skipped("db1")
    assert all(state.observe(m.name) == [] for m in c.METRICS) and state.durations() == []
    state.claim("db1", new)
    state.fail("db1", "timeout", owner=old)
    assert state.observe(c.AGENT_UP.name) == []
    state.fail("db1", "timeout", owner=new)
    assert state.observe(c.AGENT_UP.name) == [(T, 0.0)]


def test_data_past_its_freshness_is_dropped_and_up_reads_0() -> None:
    state = MetricsState()
    points: Points = {m.name: [] for m in c.METRICS}
    points[c.CONNECTION_COUNT.name] = [(T, 3.0)]
    state.publish("db1", PointSet(points, []), fresh_for=0.2)
    assert state.observe(c.CONNECTION_COUNT.name) == [(T, 3.0)]
    assert state.observe(c.AGENT_UP.name) == [(T, 1.0)]
    time.sleep(0.3)
    assert state.observe(c.CONNECTION_COUNT.name) == []
    assert state.observe(c.AGENT_UP.name) == [(T, 0.0)]


def test_staleness_drops_polled_points_reads_up_0_and_keeps_counters() -> None:
    state = MetricsState()
    points: Points = {m.name: [] for m in c.METRICS}
    points[c.CONNECTION_COUNT.name] = [(T, 3.0)]
    state.claim("db1", "runner")
    state.publish("db1", PointSet(points, [(opened("web"), 2.0)]), fresh_for=0.2)
    state.publish("db1", PointSet(points, [(opened("web"), 1.0)]), fresh_for=0.2)
    state.skipped("db1")
    state.fail("db1", "timeout")
    state.publish("db1", PointSet(points, []), fresh_for=0.2)
    before = {m.name: state.observe(m.name) for m in c.METRICS}
    assert before[c.CONNECTION_COUNT.name] == [(T, 3.0)]
    time.sleep(0.3)
    after = {m.name: state.observe(m.name) for m in c.METRICS}
    kept = {c.CONNECTION_OPENED.name, c.POLL_ERRORS.name, c.POLL_SKIPPED.name}
    assert {n: p for n, p in after.items() if p} == {
        **{n: before[n] for n in kept}, c.AGENT_UP.name: [(T, 0.0)]}
    assert after[c.CONNECTION_OPENED.name] == [(opened("web"), 3.0)]
    assert after[c.POLL_SKIPPED.name] == [(T, 1.0)]
    assert dict(after[c.POLL_ERRORS.name]) == {
        (*T, ("error", kind)): float(kind == "timeout") for kind in c.POLL_ERROR_KINDS}


def test_a_failed_poll_drops_the_targets_points_and_counts_its_kind() -> None:
    state = MetricsState()
    points: Points = {m.name: [] for m in c.METRICS}
    points[c.CONNECTION_COUNT.name] = [(T, 3.0)]
    state.publish("db1", PointSet(points, [(opened("web"), 2.0)]))
    state.publish("db1", PointSet(points, []))
    state.fail("db1", "auth")
    state.fail("db1", "auth")
    assert state.observe(c.CONNECTION_COUNT.name) == []
    assert state.observe(c.AGENT_UP.name) == [(T, 0.0)]
    assert state.observe(c.CONNECTION_OPENED.name) == [(opened("web"), 2.0)]
    assert dict(state.observe(c.POLL_ERRORS.name))[(*T, ("error", "auth"))] == 2.0
    starts = {start for _, _, start in state.counter(c.POLL_ERRORS.name)}
    assert len(starts) == 1 and starts <= {s for _, _, s in state.counter(c.CONNECTION_OPENED.name)}
