"""The exceptional client sessions, row by row: waiting on a lock, blocking one, or among the
oldest idle in transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...part import Part, timestamp

IDLE_TX_LIMIT = 20
SESSION_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Session:
    """One exceptional client session: waiting on a lock, blocking one, or idle in transaction.

    Only these are fetched row by row; ``query`` is filled only when the user asked for it.
    """

    pid: int
    datname: str | None
    usename: str | None
    application_name: str
    client_addr: str
    client_hostname: str | None
    backend_type: str
    state: str
    backend_start: datetime | None
    xact_start: datetime | None
    query_start: datetime | None
    state_change: datetime | None
    wait_event_type: str | None
    wait_event: str | None
    blocking_pids: tuple[int, ...]
    state_age: float | None
    xact_age: float | None
    locks_held: int
    query: str | None = None


def _session(**row: Any) -> Session:
    row["blocking_pids"] = tuple(row["blocking_pids"] or ())
    for column in ("backend_start", "xact_start", "query_start", "state_change"):
        row[column] = timestamp(row[column])
    return Session(**row)


def _params(server_version_num: int) -> Mapping[str, Any]:
    return {"idle_tx_limit": IDLE_TX_LIMIT, "session_limit": SESSION_LIMIT}


PART = Part("sessions", Session, _session, _params)
