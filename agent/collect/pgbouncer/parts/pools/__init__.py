"""``SHOW POOLS``: one row per (database, user) pool."""

from __future__ import annotations

from dataclasses import dataclass

from ....part import ConsolePart, ConsoleRows, Index
from ...rows import by_fields


@dataclass(frozen=True, slots=True)
class Pool:
    """One ``SHOW POOLS`` row: a (database, user) pool; ``maxwait`` in seconds."""

    database: str
    user: str
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    sv_used: int
    sv_tested: int
    sv_login: int
    maxwait: float
    pool_mode: str


def _pools(rows: ConsoleRows, ix: Index) -> tuple[Pool, ...]:
    wait, wait_us = ix["maxwait"], ix["maxwait_us"]
    return by_fields(Pool, rows, ix, maxwait=lambda r: r[wait] + r[wait_us] / 1e6)


PART = ConsolePart("pools", Pool, "POOLS", _pools)
