"""Catch bursts: when the history asks for one, what a burst reads on a real server of every
supported major, that the next poll does not count its backends again, and its bounds."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from agent_e2e import wait_sessions_gone
from histories import poll
from snapshots import group

from agent import contract as c
from agent import spec
from agent.aggregate.history import History, caught_holders
from agent.collect import catch
from agent.collect.catch import Caught
from agent.collect.client import TargetClient
from agent.collect.snapshot import ActivityGroup
from agent.config import Target, Thresholds
from agent.demo.server import LocalServer
from agent.demo.workload import Workload
from agent.diagnose.findings import diagnose

DIMS = ("datname", "application_name", "client_addr", "state")


def quiet_then(sessions_later: int, *groups_later: ActivityGroup, seconds: float = 1.0
               ) -> History:
    """Two polls ``seconds`` apart: web's 5 idle connections, then ``sessions_later`` more
    sessions counted by the server."""
    h = History(resolution=0)
    h.add(poll(0, 100, group("web", "idle", 5)))
    h.add(poll(seconds, 100 + sessions_later, group("web", "idle", 5), *groups_later))
    return h


def due(h: History) -> bool:
    """Whether the daemon would burst, at the default churn_rate threshold."""
    return h.uncaught(catch.ENOUGH, Thresholds()[spec.CHURN_RATE])


def backend(pid: int, app: str = "churner", addr: str = "10.0.0.9") -> Caught:
    return Caught(pid, datetime(2026, 12, 1), "shop", app, addr)


def test_a_burst_is_due_when_the_interval_had_short_lived_sessions_no_poll_caught() -> None:
    assert due(quiet_then(30))
    assert not due(quiet_then(0))  # nothing short-lived
    assert not due(quiet_then(30, group("api", "idle", 30, opened=30)))  # they stayed open
    # The polls caught all of few, or enough of many: no burst.
    assert not due(quiet_then(3, group("api", "active", 0, opened=3)))
    assert not due(quiet_then(90, group("api", "active", 0, opened=20)))
    assert due(quiet_then(90, group("api", "active", 0, opened=19)))
    # Below the churn_rate threshold (a monitor connecting every few seconds): no burst.
    assert not due(quiet_then(14, seconds=15.0)) and due(quiet_then(15, seconds=15.0))
    assert quiet_then(14, seconds=15.0).uncaught(catch.ENOUGH, 0.5)
    h = History(resolution=0)
    h.add(poll(0, 100, group("web", "idle", 5)))
    assert not due(h)  # one poll: no interval yet


def test_without_the_session_counter_no_burst_is_due() -> None:
    """PostgreSQL 12/13: nothing says sessions went uncaught, so the daemon never bursts."""
    h = History(resolution=0)
    h.add(poll(0, None, group("web", "idle", 5), version=130012))
    h.add(poll(1, None, group("web", "idle", 5), version=130012))
    assert not due(h)


def test_caught_backends_attribute_the_counted_rate_and_name_the_holder() -> None:
    h = quiet_then(30)
    assert h.churn()[0].holders == ()  # counted, but no holder to give it to
    h.catch(caught_holders([backend(1), backend(2), backend(3)], DIMS))
    shop = next(d for d in h.churn() if d.datname == "shop")
    (churner,) = shop.holders
    assert (churner.application_name, churner.client_addr, churner.caught) == (
        "churner", "10.0.0.9", 3)
    assert churner.rate == 30.0
    # It holds no connection at the last poll, and the diagnosis still names it.
    found = diagnose(poll(1, 130, group("web", "idle", 5)), history=h)
    churn = next(f for f in found if f.code == "connection_churn")
    assert churn.data["application_name"] == "churner" and churn.data["count"] == 0
    assert churn.title.startswith("churner opens 30.0 new connections/s in database shop")
    assert "held no connection at the last poll" in churn.evidence[0]


def test_caught_holders_follow_the_configured_dimensions() -> None:
    caught = [backend(1), backend(2, addr="10.0.0.8"), backend(3, app="other")]
    assert caught_holders(caught, DIMS) == {("shop", "churner", "10.0.0.9"): 1,
                                           ("shop", "churner", "10.0.0.8"): 1,
                                           ("shop", "other", "10.0.0.9"): 1}
    assert caught_holders(caught, ("application_name",)) == {("", "churner", ""): 2,
                                                             ("", "other", ""): 1}


def test_a_burst_stays_within_the_holder_cap() -> None:
    h = History(resolution=0, max_holders=3)
    h.add(poll(0, 100, group("web", "idle", 5)))
    h.add(poll(1, 150, group("web", "idle", 5)))
    h.catch(caught_holders([backend(i, app=f"app-{i}") for i in range(40)], DIMS))
    newest = h.samples[-1]
    assert len(newest.holders) <= 4
    assert sum(x.opened for x in newest.holders.values()) == 40


def test_the_budget_is_a_tenth_of_the_interval_and_at_most_the_samples() -> None:
    assert catch.budget(15.0) == catch.SAMPLES * catch.SPACING_S == 1.0
    assert catch.budget(0.5) == pytest.approx(0.05)


def test_a_catch_row_carries_no_query_text() -> None:
    assert [f.name for f in dataclasses.fields(Caught)] == [
        "pid", "backend_start", "datname", "application_name", "client_addr"]
    assert "query" not in (catch.sql(180000) or "").split("--")[-1].lower()


@pytest.fixture
def client(pg: LocalServer) -> Iterator[TargetClient]:
    wait_sessions_gone(pg)
    agent = TargetClient(Target("t", pg.dsn()))
    yield agent
    agent.close()


@pytest.mark.all_versions
def test_a_burst_catches_young_backends_once_on_every_version(
        pg: LocalServer, workload: Workload, client: TargetClient) -> None:
    assert client.catch(1.0) == ()  # no poll yet: nothing to catch since
    client.poll()
    workload.churn("churner", 20, query_seconds=0.03)
    late = set(workload.idle(2, "late"))  # opened after the poll, long-lived
    start = time.monotonic()
    caught = client.catch(1.0)
    assert time.monotonic() - start < 1.5
    by_app: dict[str, set[int]] = {}
    for b in caught:
        by_app.setdefault(b.application_name, set()).add(b.pid)
    assert by_app.get("late") == late, caught
    assert len(by_app.get("churner", ())) >= 3, caught
    assert len(caught) == len({b.pid for b in caught})  # each backend once
    assert {b.client_addr for b in caught} == {"127.0.0.1"}
    assert {b.datname for b in caught} == {"postgres"}
    assert c.AGENT_APPLICATION_NAME not in by_app  # not the agent's own backend
    # The next poll does not count the caught backends that are still open as new.
    late_groups = [g for g in client.poll().groups if g.application_name == "late"]
    assert sum(g.count for g in late_groups) == 2 and sum(g.opened for g in late_groups) == 0


def test_a_burst_ends_at_its_budget_and_once_it_caught_enough(
        pg: LocalServer, workload: Workload, client: TargetClient) -> None:
    client.poll()
    start = time.monotonic()
    assert client.catch(0.1) == ()
    assert time.monotonic() - start < 0.3
    workload.idle(catch.ENOUGH + 10, "pool")  # all young at once: the first sample has enough
    start = time.monotonic()
    caught = client.catch(1.0)
    assert len(caught) == catch.ENOUGH + 10 and time.monotonic() - start < 0.5


def test_a_burst_needs_only_pg_monitor_and_without_it_sees_only_its_own_role(
        pg: LocalServer, workload: Workload) -> None:
    wait_sessions_gone(pg)
    roles = ("catch_monitor", "catch_plain")
    pg.execute(*(f"DROP ROLE IF EXISTS {r}" for r in roles),
               "CREATE ROLE catch_monitor LOGIN IN ROLE pg_monitor",
               "CREATE ROLE catch_plain LOGIN")
    caught = {}
    for role in roles:
        agent = TargetClient(Target(role, pg.dsn(user=role)))
        try:
            agent.poll()
            workload.idle(2, f"late-{role}")  # the superuser's sessions, opened after the poll
            caught[role] = {b.application_name for b in agent.catch(0.2)}
        finally:
            agent.close()
    pg.execute(*(f"DROP ROLE {r}" for r in roles))
    # A role without pg_monitor sees no other role's backend_start: never caught, as in a poll.
    assert caught == {"catch_monitor": {"late-catch_monitor"}, "catch_plain": set()}
