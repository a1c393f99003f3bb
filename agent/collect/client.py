"""One dedicated, read-only connection per target, and the poll that reads a Snapshot."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo, errors

from .. import contract
from ..config import Target, read_password
from ..errors import TargetError
from ..spec import PollError
from . import processes, queries
from .deadline import Guarded
from .normalise import normalise_query
from .settings import normalise
from .snapshot import (
    ActiveStatements,
    ActivityGroup,
    BackendTypeCount,
    ClientPort,
    ConnectionLimit,
    DatabaseSessions,
    LockWait,
    Session,
    Setting,
    Snapshot,
    TopStatement,
    WaitCount,
)

log = logging.getLogger(__name__)
R = TypeVar("R")

STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 1000
CONNECT_TIMEOUT_S = 5
POLL_DEADLINE_S = STATEMENT_TIMEOUT_MS / 1000 + 2.0
"""Client-side bound on the statements of one poll (see ``deadline``): the server's own
statement_timeout gets the first chance to end a slow statement cleanly."""
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3, "tcp_user_timeout": 15_000}
"""A dead peer or network breaks the idle connection between polls (not a stopped backend,
whose kernel still answers: that takes the deadline)."""
CHURN_WINDOW_S = 60.0
IDLE_TX_LIMIT = 20
SESSION_LIMIT = 500
QUERY_CHARS = 200
CLIENT_PORT_LIMIT = 5000


def agent_params(target: Target) -> dict[str, Any]:
    """The target's DSN parameters with the agent's name, its password (from a file or a
    credential), a connect timeout and keepalives, where the DSN does not set them."""
    params = conninfo.conninfo_to_dict(target.dsn)
    password = read_password(target)
    if password is not None:
        params["password"] = password
    params["application_name"] = contract.AGENT_APPLICATION_NAME
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    for key, value in KEEPALIVES.items():
        params.setdefault(key, value)
    return params


def connection_string(target: Target) -> str:
    """The target's DSN with the agent's own settings: its name, a connect timeout, read-only."""
    params = agent_params(target)
    own = "-c default_transaction_read_only=on"
    params["options"] = f"{params.get('options') or ''} {own}".strip()
    return conninfo.make_conninfo("", **params)


_CONNECT_FAILURES = (
    (PollError.TOO_MANY_CONNECTIONS, ("too many clients already",
                                      "remaining connection slots are",
                                      "too many connections for")),
    (PollError.AUTH, ("password authentication failed", "no pg_hba.conf entry",
                      "no password supplied", "pg_hba.conf rejects connection",
                      "authentication failed", "does not exist",
                      "permission denied for database", "certificate",
                      "does not match host name", "SSL error", "SSL was required")),
    (PollError.TIMEOUT, ("timeout expired",)),
)
"""libpq reports connection-time errors as text only (no SQLSTATE reaches the client before a
session exists), so these are matched on libpq's and the server's English messages; anything
else is a plain ``connect`` error. Errors of an established session go by SQLSTATE."""


def classify(exc: BaseException, target: str, *, connecting: bool = False) -> TargetError:
    """Map a psycopg error to a poll-error kind and a one-line message without secrets."""
    sqlstate = getattr(exc, "sqlstate", None)
    # libpq's text spans lines ("connection to server ... failed: server closed the connection
    # unexpectedly / This probably means ... / before or while processing the request."): all
    # of them on one line. libpq never puts the password in its messages.
    first_line = " ".join(str(exc).split()) or type(exc).__name__
    diag = getattr(exc, "diag", None)
    if sqlstate and diag is not None and diag.message_primary:
        # A server error's text goes on with LINE/caret context lines: keep the message.
        first_line = " ".join(str(diag.message_primary).split())
    if connecting and not sqlstate:
        kind = next((k for k, needles in _CONNECT_FAILURES
                     if any(n in first_line for n in needles)), PollError.CONNECT)
    elif isinstance(exc, errors.TooManyConnections):
        kind = PollError.TOO_MANY_CONNECTIONS
    elif isinstance(exc, errors.InvalidAuthorizationSpecification | errors.InvalidPassword):
        kind = PollError.AUTH
    elif isinstance(exc, errors.QueryCanceled | errors.LockNotAvailable | TimeoutError):
        kind = PollError.TIMEOUT
    elif isinstance(exc, psycopg.OperationalError | OSError):
        kind = PollError.CONNECT
    else:
        kind = PollError.QUERY
    return TargetError(kind, f"target {target}: {kind}: {first_line}")


class TargetClient:
    """Holds one target's connection; ``poll`` (re)connects on demand and never writes.

    Every statement runs under a client-side deadline (``POLL_DEADLINE_S``, see ``deadline``);
    ``close`` may be called from another thread while a poll is in flight: it aborts that poll.
    """

    def __init__(self, target: Target, *, show_queries: bool = False,
                 dimensions: tuple[str, ...] = contract.GROUP_DIMENSIONS,
                 max_groups: int = 200, client_processes: bool = True) -> None:
        self.target = target
        self.client_processes = client_processes
        self.show_queries = show_queries
        self.dimensions = dimensions
        self.max_groups = max_groups
        self._guard: Guarded[psycopg.Connection[Any]] = Guarded(target.name, POLL_DEADLINE_S)
        self._since: datetime | None = None
        self._settings: tuple[Setting, ...] | None = None
        self._conf_load_time: datetime | None = None
        self._recent_pids: frozenset[int] | None = None
        self.statements = False
        """Also read what active sessions do (statement ages, top statements): set it for
        the polls whose diagnosis needs the evidence of a busy pool."""

    @property
    def connected(self) -> bool:
        return self._guard.connected

    @property
    def backend_pid(self) -> int | None:
        conn = self._guard.conn
        return conn.info.backend_pid if conn is not None else None

    def connect(self) -> None:
        if self.connected:
            return
        try:
            # connect_timeout bounds the whole attempt on the client (psycopg enforces it).
            conn = psycopg.connect(connection_string(self.target), autocommit=True)
        except (psycopg.Error, OSError) as exc:
            raise classify(exc, self.target.name, connecting=True) from None
        self._guard.conn = conn
        try:
            # Session-level SET: pg_settings.reset_val keeps showing the server's values.
            self._guard.run(lambda c: c.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}"
                                                f"; SET lock_timeout = {LOCK_TIMEOUT_MS}"),
                            self._classify)
        except TargetError:
            self._guard.drop()  # never poll without the agent's own timeouts
            raise
        self._since = None
        self._settings = None
        self._recent_pids = None
        log.info("connected", extra={"target": self.target.name,
                                     "server_version": conn.info.server_version})

    def close(self) -> None:
        self._guard.close()

    def poll(self) -> Snapshot:
        """Read one snapshot with one statement (one round trip); reconnects if needed."""
        with self._guard.polling():
            self.connect()
            snapshot = self._guard.run(self._read, self._classify)
        self._since = snapshot.taken_at
        return snapshot

    def _classify(self, exc: Exception) -> TargetError:
        return classify(exc, self.target.name)

    def _read(self, conn: psycopg.Connection[Any]) -> Snapshot:
        version = conn.info.server_version
        nets = processes.local_networks() if self.client_processes else ()
        params: dict[str, Any] = {
            "unset": contract.UNSET_APPLICATION, "local": contract.LOCAL_CLIENT,
            "hidden": contract.HIDDEN, "since": self._since, "churn_window": CHURN_WINDOW_S,
            "idle_tx_limit": IDLE_TX_LIMIT, "session_limit": SESSION_LIMIT,
            "show_queries": self.show_queries, "query_chars": QUERY_CHARS,
            "statements": self.statements,
            "setting_names": queries.setting_names(version),
            "max_groups": self.max_groups, "overflow": contract.OVERFLOW_VALUE,
            "local_nets": list(nets),
            "unix_clients": bool(nets) and processes.on_this_host(
                conn.info.hostaddr or conn.info.host, nets),
            "client_port_limit": CLIENT_PORT_LIMIT,
            **{f"by_{dim}": dim in self.dimensions for dim in contract.GROUP_DIMENSIONS},
        }
        statement, present = queries.poll(version, with_settings=self._settings is None)
        # One statement (its own read-only transaction): one read of pg_stat_activity and
        # pg_locks, consistent with each other (see queries.poll).
        row = conn.execute(statement, params, prepare=True).fetchone()
        assert row is not None
        taken_at: datetime = row[0]
        parts: dict[str, list[dict[str, Any]]] = dict(zip(present, row[2:], strict=True))
        if "settings" in parts:
            self._settings = tuple(normalise(r["name"], r["setting"], r["unit"])
                                   for r in parts["settings"])
        elif row[1] != self._conf_load_time:  # reloaded since: read the settings again
            sql = queries.load("settings", version)
            assert sql is not None
            self._settings = tuple(normalise(*r) for r in conn.execute(sql, params))
        self._conf_load_time = row[1]
        assert self._settings is not None

        def rows(query: str, make: Callable[..., R]) -> tuple[R, ...]:
            return tuple(make(**r) for r in parts.get(query, ()))

        ports = rows("client_ports", ClientPort)
        return Snapshot(
            target=self.target.name,
            taken_at=taken_at,
            server_version_num=version,
            settings=self._settings,
            groups=self._groups(parts["activity_groups"]),
            backend_types=rows("backend_types", BackendTypeCount),
            waits=rows("waits", WaitCount),
            sessions=rows("sessions", _session),
            lock_waits=rows("lock_waits", _lock_wait),
            limits=rows("limits", ConnectionLimit),
            databases=rows("databases", DatabaseSessions),
            churn_window=CHURN_WINDOW_S,
            statements=rows("statements", _statements),
            client_ports=ports,
            host=(processes.read_host(((p.client_addr, p.client_port, p.pid) for p in ports),
                                      ports[0].server_port if ports else None)
                  if self.client_processes else None),
        )

    def _groups(self, rows: list[dict[str, Any]]) -> tuple[ActivityGroup, ...]:
        """Groups with ``opened``: recent backends that the previous poll did not list."""
        seen, recent = self._recent_pids, set[int]()
        groups = []
        for row in rows:
            pids = row.pop("recent_pids")
            recent.update(pids)
            opened = 0 if seen is None else sum(1 for pid in pids if pid not in seen)
            groups.append(ActivityGroup(**row, opened=opened))
        self._recent_pids = frozenset(recent)
        return tuple(groups)


def _timestamp(value: str | None) -> datetime | None:
    """A timestamptz as json_agg writes it (ISO 8601 with offset)."""
    return datetime.fromisoformat(value) if value is not None else None


def _session(**row: Any) -> Session:
    row["blocking_pids"] = tuple(row["blocking_pids"] or ())
    for column in ("backend_start", "xact_start", "query_start", "state_change"):
        row[column] = _timestamp(row[column])
    return Session(**row)


def _statements(**row: Any) -> ActiveStatements:
    top = _normalised(TopStatement(**t) for t in row.pop("top") or ())
    return ActiveStatements(**row, top=top)


def _normalised(statements: Iterable[TopStatement]) -> tuple[TopStatement, ...]:
    """Statements with literals replaced by ``?``, merged, most frequent first."""
    merged: dict[tuple[str, int | None], int] = {}
    for t in statements:
        key = (normalise_query(t.query), t.query_id)
        merged[key] = merged.get(key, 0) + t.count
    return tuple(TopStatement(q, i, n) for (q, i), n in
                 sorted(merged.items(), key=lambda kv: (-kv[1], kv[0][0])))


def _lock_wait(**row: Any) -> LockWait:
    row["waitstart"] = _timestamp(row["waitstart"])
    return LockWait(**row)
