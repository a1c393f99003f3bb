"""Typed, immutable snapshot of one poll; field names follow PostgreSQL's columns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .processes import HostProcesses


@dataclass(frozen=True, slots=True)
class ActivityGroup:
    """Client backends sharing (datname, usename, application_name, client_addr, state).

    Aggregated in SQL so a poll costs the same at 3,000 sessions as at 30.
    ``opened`` counts backends the previous poll did not see (0 on a connection's first poll);
    ``young`` counts backends younger than the churn window; ``folded`` (on the server's overflow
    row) how many groups the cardinality cap folded into it. Names of dimensions configured out
    are None.
    """

    datname: str | None
    usename: str | None
    application_name: str
    client_addr: str
    state: str
    count: int
    max_state_age: float | None
    max_xact_age: float | None
    opened: int
    young: int
    folded: int = 0


@dataclass(frozen=True, slots=True)
class BackendTypeCount:
    backend_type: str
    count: int


@dataclass(frozen=True, slots=True)
class WaitCount:
    """Active client sessions waiting on one wait event."""

    datname: str | None
    usename: str | None
    application_name: str
    wait_event_type: str
    wait_event: str
    count: int


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


@dataclass(frozen=True, slots=True)
class LockWait:
    """An ungranted ``pg_locks`` row; ``wait_age`` needs ``waitstart`` (PostgreSQL 14+)."""

    pid: int
    locktype: str
    mode: str
    relation: str | None
    waitstart: datetime | None
    wait_age: float | None


@dataclass(frozen=True, slots=True)
class Setting:
    """A connection-relevant setting; durations are normalised to seconds, 0 means disabled."""

    name: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class ConnectionLimit:
    scope: str  # "role" or "database"
    name: str
    limit: int
    current: int


@dataclass(frozen=True, slots=True)
class DatabaseSessions:
    """``pg_stat_database`` session counters (PostgreSQL 14+)."""

    datname: str
    sessions: int
    sessions_abandoned: int
    sessions_fatal: int
    sessions_killed: int


@dataclass(frozen=True, slots=True)
class TopStatement:
    """A frequent statement among an application's active sessions (only with show_queries)."""

    query: str
    query_id: int | None
    count: int


@dataclass(frozen=True, slots=True)
class ActiveStatements:
    """An application's active client sessions: statement ages and lock waits.

    The evidence for a busy pool: what its connections are doing, and for how long.
    """

    application_name: str
    count: int
    max_age: float
    median_age: float
    blocked: int
    top: tuple[TopStatement, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientPort:
    """A client backend connected from one of this host's addresses (see processes.py)."""

    pid: int
    client_addr: str
    client_port: int
    application_name: str
    state: str
    server_port: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one poll read, taken inside one read-only transaction."""

    target: str
    taken_at: datetime
    server_version_num: int
    settings: tuple[Setting, ...]
    groups: tuple[ActivityGroup, ...]
    backend_types: tuple[BackendTypeCount, ...]
    waits: tuple[WaitCount, ...]
    sessions: tuple[Session, ...]
    lock_waits: tuple[LockWait, ...]
    limits: tuple[ConnectionLimit, ...]
    databases: tuple[DatabaseSessions, ...]
    churn_window: float = 60.0
    statements: tuple[ActiveStatements, ...] = ()
    client_ports: tuple[ClientPort, ...] = ()
    host: HostProcesses | None = None
    """The local processes owning ``client_ports``' sockets (None: attribution off)."""

    def setting(self, name: str) -> float | None:
        for s in self.settings:
            if s.name == name:
                return s.value
        return None
