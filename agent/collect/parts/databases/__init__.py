"""``pg_stat_database`` session outcome counters (PostgreSQL 14+)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .... import contract as c
from ...part import Part, Point


@dataclass(frozen=True, slots=True)
class DatabaseSessions:
    """``pg_stat_database`` session counters (PostgreSQL 14+)."""

    datname: str
    sessions: int
    sessions_abandoned: int
    sessions_fatal: int
    sessions_killed: int


def _points(rows: tuple[DatabaseSessions, ...]) -> Iterable[Point]:
    for db in rows:
        for outcome, value in zip(c.SESSION_OUTCOMES, (db.sessions, db.sessions_abandoned,
                                                       db.sessions_fatal, db.sessions_killed),
                                  strict=True):
            yield c.SESSIONS, (("datname", db.datname), ("outcome", outcome)), value


PART = Part("databases", DatabaseSessions, points=_points)
