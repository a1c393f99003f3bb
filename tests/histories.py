"""Hand-built polls and rolling histories for the pure timeline steps (built on snapshots.py)."""

from __future__ import annotations

from datetime import timedelta

from snapshots import NOW, DatabaseSessions, group, snapshot

from agent.aggregate.attribution import Attribution, attribute
from agent.aggregate.history import History
from agent.collect.snapshot import ActivityGroup


def poll(second: float, sessions: int | None, *groups: ActivityGroup, version: int = 150004
         ) -> Attribution:
    dbs = () if sessions is None else (DatabaseSessions("shop", sessions, sessions // 10, 0, 0),
                                       DatabaseSessions("postgres", 7, 0, 0, 0))
    return attribute(snapshot(list(groups), taken_at=NOW + timedelta(seconds=second),
                              databases=dbs, server_version_num=version))


def churning(seconds: int = 5, per_second: int = 12) -> History:
    """api keeps one connection and opens ``per_second`` more that close again; every second
    a poll catches two of them."""
    h = History(resolution=0)
    for i in range(seconds + 1):
        caught = [group("api", "active", 2, opened=2)] if i else []
        h.add(poll(i, 100 + i * per_second, group("api", "idle", 1), *caught,
                   group("web", "idle", 5)))
    return h
