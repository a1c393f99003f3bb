"""Ungranted heavyweight locks, one row each (wait age from PostgreSQL 14)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...part import Part, timestamp


@dataclass(frozen=True, slots=True)
class LockWait:
    """An ungranted ``pg_locks`` row; ``wait_age`` needs ``waitstart`` (PostgreSQL 14+)."""

    pid: int
    locktype: str
    mode: str
    relation: str | None
    waitstart: datetime | None
    wait_age: float | None


def _lock_wait(**row: Any) -> LockWait:
    row["waitstart"] = timestamp(row["waitstart"])
    return LockWait(**row)


PART = Part("lock_waits", LockWait, _lock_wait)
