"""Attribution and metric points on hand-built snapshots (pure)."""

from __future__ import annotations

from snapshots import (
    ConnectionLimit,
    DatabaseSessions,
    LockWait,
    WaitCount,
    group,
    session,
    snapshot,
)

from agent import contract as c
from agent.aggregate.attribution import attribute, chains
from agent.aggregate.points import points
from agent.collect.snapshot import Setting


def test_groups_counts_ages_and_slots() -> None:
    snap = snapshot([
        group("shop-web", "idle", 70, state_age=120.0, opened=3, young=5),
        group("shop-web", "idle in transaction", 6, state_age=90.0, xact_age=95.0),
        group("billing", "active", 2, addr="local", db="billing", user="bill", state_age=1.5,
              xact_age=2.5),
    ])
    a = attribute(snap)
    assert a.client_backends == 78
    assert (a.max_connections, a.reserved, a.usable) == (100, 3, 97)
    assert a.utilization == 78 / 97
    top = a.groups[0]
    assert top.key == ("shop", "shop_app", "shop-web", "10.0.0.5", "idle")
    assert (top.count, top.max_state_age, top.max_xact_age, top.opened, top.young) == \
        (70, 120.0, None, 3, 5)
    assert a.by_state() == {"idle": 70, "idle in transaction": 6, "active": 2}


def test_reserved_connections_adds_to_superuser_reserved() -> None:
    settings = (*snapshot([]).settings, Setting("reserved_connections", 5, ""))
    a = attribute(snapshot([group(count=10)], settings=settings))
    assert (a.reserved, a.usable) == (8, 92)


def test_dropping_client_addr_merges_groups() -> None:
    snap = snapshot([group(addr="10.0.0.5", count=3, state_age=10.0),
                     group(addr="10.0.0.6", count=4, state_age=20.0, opened=2)])
    a = attribute(snap, dimensions=("datname", "usename", "application_name", "state"))
    assert len(a.groups) == 1
    g = a.groups[0]
    assert (g.key, g.count, g.max_state_age, g.opened) == (
        ("shop", "shop_app", "shop-web", "idle"), 7, 20.0, 2)
    ps = points(a)
    for attrs, _ in ps.points["postgresql.connection.count"] + ps.opened:
        assert "client_addr" not in dict(attrs)


def test_cardinality_cap_folds_the_smallest_groups_and_counts_them() -> None:
    groups = [group(f"app-{i:04d}", count=1 + (i % 7)) for i in range(500)]
    a = attribute(snapshot(groups), max_groups=50)
    assert len(a.groups) == 50
    overflow = [g for g in a.groups if g.key[2] == c.OVERFLOW_VALUE]
    assert len(overflow) == 1
    assert all(v == c.OVERFLOW_VALUE for v in overflow[0].key)
    assert a.folded == 451
    assert sum(g.count for g in a.groups) == sum(g.count for g in groups)
    kept_min = min(g.count for g in a.groups if g is not overflow[0])
    assert kept_min == 7  # the 49 largest survive: 71 groups have the largest count, 7
    ps = points(a, max_groups=50)
    assert len(ps.points["postgresql.connection.count"]) == 50
    assert ps.points["pgconn_agent.groups.folded"] == [((("target", "db1"),), 451.0)]


def test_cap_is_independent_of_input_order() -> None:
    groups = [group(f"app-{i}", count=i % 3 + 1) for i in range(30)]
    a = attribute(snapshot(groups), max_groups=10)
    b = attribute(snapshot(list(reversed(groups))), max_groups=10)
    assert a.groups == b.groups


def test_a_session_blocked_by_two_of_one_group_counts_once() -> None:
    snap = snapshot([group(count=4)], sessions=(
        session(100, state="idle in transaction"), session(101, blocking=(100,)),
        session(102, blocking=(101,)), session(103, blocking=(101, 102))))
    blocking = dict(attribute(snap).blocking)
    assert blocking[("shop", "shop_app", "shop-web", "10.0.0.5", "active")] == 2
    assert blocking[("shop", "shop_app", "shop-web", "10.0.0.5", "idle in transaction")] == 1


def test_lock_chains_find_the_root_and_count_transitively() -> None:
    sessions = (
        session(100, state="idle in transaction", state_age=400.0),
        session(101, blocking=(100,)),
        session(102, blocking=(101,)),
        session(103, blocking=(101, 102)),
        session(200, app="batch", state="active"),
        session(201, app="web2", blocking=(200,)),
    )
    found = chains(sessions)
    assert [(ch.root_pid, ch.blocked_pids) for ch in found] == [(100, (101, 102, 103)),
                                                                 (200, (201,))]
    assert found[0].root is not None and found[0].root.state == "idle in transaction"


def test_blocker_of_a_hidden_or_unfetched_pid_is_still_a_root() -> None:
    found = chains((session(101, blocking=(999,)),))
    assert [(ch.root_pid, ch.root, ch.blocked_pids) for ch in found] == [(999, None, (101,))]


def test_blocking_counts_per_blocker_group() -> None:
    snap = snapshot([group(count=4)], sessions=(
        session(100, state="idle in transaction"), session(101, blocking=(100,)),
        session(102, blocking=(100,))))
    a = attribute(snap)
    assert a.blocking == ((("shop", "shop_app", "shop-web", "10.0.0.5", "idle in transaction"),
                           2),)


def test_points_carry_every_field_to_its_metric() -> None:
    snap = snapshot(
        [group("shop-web", "idle", 5, state_age=11.0, xact_age=None, opened=2)],
        waits=(WaitCount("shop", "shop_app", "shop-web", "Lock", "transactionid", 3),),
        sessions=(session(100, state="idle in transaction"), session(101, blocking=(100,))),
        lock_waits=(LockWait(101, "transactionid", "ShareLock", None, None, 7.5),),
        limits=(ConnectionLimit("role", "shop_app", 50, 5),),
        databases=(DatabaseSessions("shop", 10, 1, 2, 3),),
    )
    ps = points(attribute(snap))
    p = {name: [(dict(a), v) for a, v in pts] for name, pts in ps.points.items()}
    t = {"target": "db1"}
    g = {**t, "datname": "shop", "usename": "shop_app", "application_name": "shop-web",
         "client_addr": "10.0.0.5", "state": "idle"}
    assert p["postgresql.connection.count"] == [(g, 5.0)]
    assert p["postgresql.connection.state_age.max"] == [(g, 11.0)]
    assert p["postgresql.transaction.age.max"] == []
    assert p["postgresql.connection.max"] == [(t, 100.0)]
    assert p["postgresql.connection.reserved"] == [(t, 3.0)]
    assert p["postgresql.connection.utilization"] == [(t, 5 / 97)]
    assert p["postgresql.connection.waiting"] == [(
        {**t, "datname": "shop", "usename": "shop_app", "application_name": "shop-web",
         "wait_event_type": "Lock", "wait_event": "transactionid"}, 3.0)]
    assert p["postgresql.lock.waiting"] == [(
        {**t, "datname": "shop", "application_name": "shop-web", "locktype": "transactionid",
         "mode": "ShareLock"}, 1.0)]
    assert p["postgresql.lock.wait_time.max"] == [(
        {**t, "datname": "shop", "application_name": "shop-web"}, 7.5)]
    assert p["postgresql.lock.blocking"] == [({**g, "state": "idle in transaction"}, 1.0)]
    assert p["postgresql.connection.limit"] == [({**t, "scope": "role", "name": "shop_app"},
                                                 50.0)]
    assert sorted((a["outcome"], v) for a, v in p["postgresql.sessions"]) == [
        ("abandoned", 1.0), ("all", 10.0), ("fatal", 2.0), ("killed", 3.0)]
    assert ({**t, "name": "statement_timeout"}, 30.0) in p["postgresql.setting"]
    assert p["postgresql.backend.count"] == [({**t, "backend_type": "client backend"}, 5.0),
                                             ({**t, "backend_type": "checkpointer"}, 1.0)]
    assert p["pgconn_agent.sessions.hidden"] == [(t, 0.0)]
    assert [(dict(a), v) for a, v in ps.opened] == [(
        {**t, "application_name": "shop-web", "client_addr": "10.0.0.5"}, 2.0)]
    assert set(ps.points) == {m.name for m in c.METRICS}


def test_hidden_sessions_are_counted() -> None:
    a = attribute(snapshot([group(state=c.HIDDEN, addr=c.HIDDEN, count=7), group(count=2)]))
    assert a.hidden == 7
