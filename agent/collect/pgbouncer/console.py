"""Reads PgBouncer's admin console: ``SHOW`` commands in autocommit (the console has no
transactions), one dedicated connection per target, reconnecting on demand."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo

from ... import contract
from ...config import Target
from ..client import POLL_DEADLINE_S, agent_params, classify
from ..deadline import Guarded
from . import ADMIN_DATABASE
from .snapshot import ClientConn, Pool, PooledDatabase, PoolerSnapshot, ServerConn

log = logging.getLogger(__name__)
R = TypeVar("R")


def console_string(target: Target) -> str:
    """The target's DSN with the agent's name and a connect timeout. No ``options``: the
    console rejects startup options, and it cannot write anyway."""
    return conninfo.make_conninfo("", **agent_params(target))


@lru_cache(maxsize=4096)
def timestamp(text: str | None) -> datetime | None:
    """PgBouncer's ``connect_time`` ('2026-12-01 21:17:00 UTC', its local zone); None when the
    zone is not UTC, since an abbreviation like CET cannot be resolved reliably. Cached: many
    clients share a second, and this is most of a poll's CPU at thousands of clients."""
    if not text:
        return None
    stamp, _, zone = text.rpartition(" ")
    if zone not in ("UTC", "GMT"):
        return None
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC)


Rows = list[tuple[Any, ...]]
Index = dict[str, int]
"""Column positions of a SHOW command's result by name: looked up once per command, since
SHOW CLIENTS has a row per client (its rows are most of a poll's CPU at thousands)."""

_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in (Pool, PooledDatabase)}


def _make(cls: type[R], rows: Rows, ix: Index, **computed: Any) -> tuple[R, ...]:
    """Small results (pools, databases) as row objects from the columns their fields name;
    a missing column fails loudly (KeyError), columns a newer PgBouncer adds are ignored."""
    names = [n for n in _FIELDS[cls] if n not in computed]
    return tuple(cls(**{n: row[ix[n]] for n in names},
                     **{n: make(row) for n, make in computed.items()}) for row in rows)


def _pools(rows: Rows, ix: Index) -> tuple[Pool, ...]:
    wait, wait_us = ix["maxwait"], ix["maxwait_us"]
    return _make(Pool, rows, ix, maxwait=lambda r: r[wait] + r[wait_us] / 1e6)


def _clients(rows: Rows, ix: Index) -> tuple[ClientConn, ...]:
    user, db, state, addr, port, app, ct, wait, wait_us, ptr, link = (ix[c] for c in (
        "user", "database", "state", "addr", "port", "application_name", "connect_time",
        "wait", "wait_us", "ptr", "link"))
    unset = contract.UNSET_APPLICATION
    return tuple(ClientConn(user=r[user], database=r[db], state=r[state], addr=r[addr] or "",
                            port=r[port], application_name=r[app] or unset,
                            connect_time=timestamp(r[ct]), wait=r[wait] + r[wait_us] / 1e6,
                            ptr=r[ptr], link=r[link] or "") for r in rows)


def _servers(rows: Rows, ix: Index) -> tuple[ServerConn, ...]:
    user, db, state, addr, port, app, ct, ptr, link, pid = (ix[c] for c in (
        "user", "database", "state", "addr", "port", "application_name", "connect_time",
        "ptr", "link", "remote_pid"))
    return tuple(ServerConn(user=r[user], database=r[db], state=r[state], addr=r[addr] or "",
                            port=r[port], application_name=r[app] or "",
                            connect_time=timestamp(r[ct]), ptr=r[ptr], link=r[link] or "",
                            remote_pid=r[pid]) for r in rows)


class ConsoleClient:
    """Holds one PgBouncer target's console connection; ``poll`` reads a PoolerSnapshot under
    the same client-side deadline as a server's poll (``client.POLL_DEADLINE_S``); ``close``
    may come from another thread and aborts a poll in flight."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._guard: Guarded[psycopg.Connection[tuple[Any, ...]]] = Guarded(target.name,
                                                                            POLL_DEADLINE_S)

    def connect(self) -> None:
        if self._guard.connected:
            return
        try:
            # No prepared statements: psycopg prepares a query run 5 times, and the console
            # answers "extended query protocol not supported by admin console".
            self._guard.conn = psycopg.connect(console_string(self.target), autocommit=True,
                                               prepare_threshold=None)
        except (psycopg.Error, OSError) as exc:
            raise classify(exc, self.target.name, connecting=True) from None
        log.info("connected", extra={"target": self.target.name, "pgbouncer": self.version})

    @property
    def version(self) -> str:
        assert self._guard.conn is not None
        return self._guard.conn.info.parameter_status("server_version") or "unknown"

    def close(self) -> None:
        self._guard.close()

    def poll(self) -> PoolerSnapshot:
        with self._guard.polling():
            self.connect()
            return self._guard.run(self._read, lambda exc: classify(exc, self.target.name),
                                   catch=(psycopg.Error, KeyError))

    def _read(self, conn: psycopg.Connection[tuple[Any, ...]]) -> PoolerSnapshot:
        def show(what: str) -> tuple[Rows, Index]:
            cur = conn.execute(f"SHOW {what}")
            ix = {d.name: i for i, d in enumerate(cur.description or ())}
            db = ix["database" if "database" in ix else "name"]
            return [r for r in cur.fetchall() if r[db] != ADMIN_DATABASE], ix

        taken_at = datetime.now(UTC)
        config = {r[0]: r[1] for r in conn.execute("SHOW CONFIG").fetchall()}
        return PoolerSnapshot(
            target=self.target.name,
            taken_at=taken_at,
            version=self.version,
            max_client_conn=int(config["max_client_conn"]),
            pools=_pools(*show("POOLS")),
            clients=_clients(*show("CLIENTS")),
            servers=_servers(*show("SERVERS")),
            databases=_make(PooledDatabase, *show("DATABASES")),
        )
