"""Root blockers in the metrics: per holder, and named by pid (bounded), pure and on a real server.

A root blocker holds a lock without waiting for one itself; sessions queued behind a waiter
(a tuple-lock queue) count for the root, and the waiter in the middle is no root.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from snapshots import group, session, snapshot

from agent import contract as c
from agent.aggregate.attribution import attribute
from agent.aggregate.points import points
from agent.collect.client import TargetClient
from agent.collect.snapshot import Session
from agent.config import Target
from agent.demo.server import LocalServer
from agent.demo.workload import Workload

IIT = "idle in transaction"


def labelled(pid: int, db: str, user: str, app: str, addr: str, state: str,
             blocking: tuple[int, ...] = ()) -> Session:
    return replace(session(pid, app=app, state=state, addr=addr, blocking=blocking),
                   datname=db, usename=user)


def series(snap: Any, spec: c.MetricSpec, **kw: Any) -> list[tuple[dict[str, str], float]]:
    return sorted(((dict(attrs), v) for attrs, v in
                   points(attribute(snap, **kw)).points[spec.name]),
                  key=lambda p: (-p[1], sorted(p[0].items())))  # ties: by labels


def holder(db: str, user: str, app: str, addr: str, state: str) -> dict[str, str]:
    return {"datname": db, "usename": user, "application_name": app, "client_addr": addr,
            "state": state}


# 100 (idle in transaction) <- 101 (intermediate, active) <- 102, 103; 200 (active) <- 201;
# 999 is not visible to the agent <- 301. Every field differs between root and waiters.
CHAINS = (
    labelled(100, "shop", "shop_owner", "shop-web", "10.0.0.5", IIT),
    labelled(101, "shop", "shop_worker", "shop-worker", "10.0.0.6", "active", (100,)),
    labelled(102, "shop", "shop_worker", "shop-worker", "10.0.0.7", "active", (101,)),
    labelled(103, "shop", "shop_worker", "shop-worker", "10.0.0.8", "active", (101, 102)),
    labelled(200, "books", "batch_role", "batch", "10.0.1.1", "active"),
    labelled(201, "books", "report_role", "report", "10.0.1.2", "active", (200,)),
    labelled(301, "misc", "misc_role", "misc", "10.0.2.1", "active", (999,)),
)


def test_root_blocking_counts_everything_queued_behind_the_root_only() -> None:
    snap = snapshot([group(count=7)], sessions=CHAINS)
    t = {"target": "db1"}
    assert series(snap, c.LOCK_ROOT_BLOCKING) == [
        ({**t, **holder("shop", "shop_owner", "shop-web", "10.0.0.5", IIT)}, 3.0),
        ({**t, **holder(c.HIDDEN, c.HIDDEN, c.HIDDEN, c.HIDDEN, c.HIDDEN)}, 1.0),
        ({**t, **holder("books", "batch_role", "batch", "10.0.1.1", "active")}, 1.0),
    ]
    # The intermediate (101) blocks two directly but is no root: only lock.blocking shows it.
    assert ({**t, **holder("shop", "shop_worker", "shop-worker", "10.0.0.6", "active")}, 2.0) \
        in series(snap, c.LOCK_BLOCKING)


def test_root_blocker_names_the_pid_with_its_holder() -> None:
    snap = snapshot([group(count=7)], sessions=CHAINS)
    t = {"target": "db1"}
    assert series(snap, c.LOCK_ROOT_BLOCKER) == [
        ({**t, "pid": "100", **holder("shop", "shop_owner", "shop-web", "10.0.0.5", IIT)}, 3.0),
        ({**t, "pid": "999", **holder(c.HIDDEN, c.HIDDEN, c.HIDDEN, c.HIDDEN, c.HIDDEN)}, 1.0),
        ({**t, "pid": "200", **holder("books", "batch_role", "batch", "10.0.1.1", "active")},
         1.0),
    ]


def test_root_blocker_is_bounded_to_the_most_blocking_pids() -> None:
    sessions: list[Session] = []
    for i in range(c.ROOT_BLOCKERS_SHOWN + 3):
        root = 1000 + 100 * i
        sessions.append(labelled(root, "shop", "u", f"app{i}", "10.0.0.5", IIT))
        sessions += [labelled(root + k, "shop", "u", "w", "10.0.0.9", "active", (root,))
                     for k in range(1, i + 2)]  # root i blocks i + 1
    got = series(snapshot([group(count=len(sessions))], sessions=tuple(sessions)),
                 c.LOCK_ROOT_BLOCKER)
    top = range(c.ROOT_BLOCKERS_SHOWN + 2, 2, -1)
    assert [(a["pid"], v) for a, v in got] == [(str(1000 + 100 * i), i + 1.0) for i in top]


def test_dropped_dimensions_drop_out_of_the_root_series() -> None:
    snap = snapshot([group(count=7)], sessions=CHAINS)
    dims = ("datname", "application_name", "state")
    got = series(snap, c.LOCK_ROOT_BLOCKER, dimensions=dims)
    assert got[0] == ({"target": "db1", "pid": "100", "datname": "shop",
                       "application_name": "shop-web", "state": IIT}, 3.0)


def test_no_lock_waits_no_root_series() -> None:
    snap = snapshot([group(count=2)], sessions=(labelled(100, "shop", "u", "a", "h", IIT),))
    assert series(snap, c.LOCK_ROOT_BLOCKING) == series(snap, c.LOCK_ROOT_BLOCKER) == []


def test_real_server_tuple_lock_queue_has_one_root(pg: LocalServer, workload: Workload) -> None:
    """An idle-in-transaction row lock with four UPDATEs queued: the first waits for the
    transaction, the other three for its tuple lock. One more chain of one waiter elsewhere."""
    root, waiters = workload.lock_chain("shop-web", 4, row=11)
    other_root, _ = workload.lock_chain("billing", 1, row=12)
    workload.idle_in_transaction(2, "shop-idle")  # idle in transaction, blocking nobody
    client = TargetClient(Target("t", pg.dsn()))
    try:
        a = attribute(client.poll())
    finally:
        client.close()  # a client left to the garbage collector keeps its session open
    ps = points(a).points

    intermediates = {s.pid for s in a.sessions if s.pid in waiters
                     and any(w.blocking_pids == (s.pid,) for w in a.sessions)}
    assert intermediates, "no tuple-lock queue formed: the test would prove nothing"
    named = {dict(attrs)["pid"]: (dict(attrs), v) for attrs, v in ps[c.LOCK_ROOT_BLOCKER.name]}
    assert set(named) == {str(root), str(other_root)}
    assert named[str(root)][1] == 4.0 and named[str(other_root)][1] == 1.0
    assert named[str(root)][0]["application_name"] == "shop-web"
    assert named[str(root)][0]["state"] == IIT
    per_holder = {(dict(attrs)["application_name"], dict(attrs)["state"]): v
                  for attrs, v in ps[c.LOCK_ROOT_BLOCKING.name]}
    assert per_holder == {("shop-web", IIT): 4.0, ("billing", IIT): 1.0}
    # lock.blocking still counts the intermediate as a direct (active) blocker.
    direct = {dict(attrs)["state"]: v for attrs, v in ps[c.LOCK_BLOCKING.name]
              if dict(attrs)["application_name"] == "shop-web"}
    assert direct.get("active", 0) >= 1, direct
