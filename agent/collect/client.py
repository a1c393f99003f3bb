"""One dedicated, read-only connection per target, and the poll that reads a Snapshot."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import conninfo, errors
from psycopg.rows import dict_row

from .. import contract
from ..config import Target, read_password
from ..errors import TargetError
from ..spec import PollError
from . import catch, processes, queries
from .deadline import Guarded
from .part import Reader, discover, part_params
from .parts import activity_groups, client_ports
from .parts.activity_groups import CHURN_WINDOW_S
from .snapshot import Snapshot

log = logging.getLogger(__name__)

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
QUERY_CHARS = 200


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
        self._cached: dict[str, tuple[Any, ...]] = {}
        self._conf_load_time: datetime | None = None
        self._readers: dict[str, Reader[Any]] = {}
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
        self._cached = {}
        self._readers = {p.name: p.new_reader() for p in discover()}
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

    def catch(self, seconds: float) -> tuple[catch.Caught, ...]:
        """A churn catch burst of at most ``seconds`` right after a poll (see ``catch``): the
        backends started since that poll that it did not list, each once, and never counted as
        opened by the next poll. A failing sample ends the burst with what it caught (the next
        poll reports the target's state)."""
        opened = self._readers.get(activity_groups.PART.name)
        if self._since is None or not isinstance(opened, activity_groups.Opened):
            return ()
        caught: list[catch.Caught] = []
        with self._guard.polling():
            conn = self._guard.conn
            sql = catch.sql(conn.info.server_version) if self.connected and conn else None
            if sql is None:
                return ()

            def sample(params: dict[str, Any]) -> list[tuple[Any, ...]]:
                return self._guard.run(lambda c: c.execute(sql, params, prepare=True).fetchall(),
                                       self._classify)

            try:
                caught.extend(catch.burst(sample, self._since, opened.seen, seconds))
            except TargetError as exc:
                log.info("catch burst ended early", extra={"target": self.target.name,
                                                           "error": str(exc)})
        opened.saw(b.pid for b in caught)
        return tuple(caught)

    def _classify(self, exc: Exception) -> TargetError:
        return classify(exc, self.target.name)

    def _read(self, conn: psycopg.Connection[Any]) -> Snapshot:
        version = conn.info.server_version
        nets = processes.local_networks() if self.client_processes else ()
        params: dict[str, Any] = {
            "unset": contract.UNSET_APPLICATION, "local": contract.LOCAL_CLIENT,
            "hidden": contract.HIDDEN, "since": self._since,
            "show_queries": self.show_queries, "query_chars": QUERY_CHARS,
            "statements": self.statements,
            "max_groups": self.max_groups, "overflow": contract.OVERFLOW_VALUE,
            "local_nets": list(nets),
            "unix_clients": bool(nets) and processes.on_this_host(
                conn.info.hostaddr or conn.info.host, nets),
            **{f"by_{dim}": dim in self.dimensions for dim in contract.GROUP_DIMENSIONS},
        }
        params.update(part_params(version))
        statement, present = queries.poll(version, with_cached=not self._cached)
        # One statement (its own read-only transaction): one read of pg_stat_activity and
        # pg_locks, consistent with each other (see queries.poll).
        row = conn.execute(statement, params, prepare=True).fetchone()
        assert row is not None
        taken_at: datetime = row[0]
        parts = {name: self._readers[name](rows)
                 for name, rows in zip(present, row[2:], strict=True)}
        parts = self._with_cached(conn, params, parts, conf_load_time=row[1])
        snapshot = Snapshot(self.target.name, taken_at, version, parts, CHURN_WINDOW_S)
        if not self.client_processes:
            return snapshot
        return replace(snapshot, host=client_ports.host(client_ports.PART.of(snapshot)))

    def _with_cached(self, conn: psycopg.Connection[Any], params: dict[str, Any],
                     parts: dict[str, tuple[Any, ...]], *, conf_load_time: datetime
                     ) -> dict[str, tuple[Any, ...]]:
        """The parts with the cached ones (settings): as this poll read them, read again after
        a configuration reload, or as kept since."""
        if self._cached and conf_load_time != self._conf_load_time:
            version = conn.info.server_version
            with conn.cursor(row_factory=dict_row) as cur:
                for part in discover():
                    sql = queries.load(part.name, version) if part.cached else None
                    if sql is not None:
                        parts[part.name] = part.build(cur.execute(sql, params).fetchall())
        self._conf_load_time = conf_load_time
        self._cached.update((p.name, parts[p.name]) for p in discover()
                            if p.cached and p.name in parts)
        return {**parts, **self._cached}
