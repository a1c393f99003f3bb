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
from psycopg.rows import dict_row

from ... import contract
from ...config import Target, read_password
from ..client import CONNECT_TIMEOUT_S, classify
from . import ADMIN_DATABASE
from .snapshot import ClientConn, Pool, PooledDatabase, PoolerSnapshot, ServerConn

log = logging.getLogger(__name__)
Row = TypeVar("Row")


def console_string(target: Target) -> str:
    """The target's DSN with the agent's name and a connect timeout. No ``options``: the
    console rejects startup options, and it cannot write anyway."""
    params = conninfo.conninfo_to_dict(target.dsn)
    password = read_password(target)
    if password is not None:
        params["password"] = password
    params["application_name"] = contract.AGENT_APPLICATION_NAME
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    return conninfo.make_conninfo("", **params)


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


def _seconds(row: dict[str, Any], column: str) -> float:
    return float(row[column]) + float(row[f"{column}_us"]) / 1e6


_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in (Pool, ClientConn, ServerConn, PooledDatabase)}


def _make(cls: type[Row], row: dict[str, Any], **computed: Any) -> Row:
    """A row type from the columns it names; a missing column fails loudly (KeyError),
    columns a newer PgBouncer adds are ignored."""
    return cls(**{name: computed[name] if name in computed else row[name]
                  for name in _FIELDS[cls]})


def _pool(row: dict[str, Any]) -> Pool:
    return _make(Pool, row, maxwait=_seconds(row, "maxwait"))


def _client(row: dict[str, Any]) -> ClientConn:
    return _make(ClientConn, row, addr=row["addr"] or "", link=row["link"] or "",
                 application_name=row["application_name"] or contract.UNSET_APPLICATION,
                 connect_time=timestamp(row["connect_time"]), wait=_seconds(row, "wait"))


def _server(row: dict[str, Any]) -> ServerConn:
    return _make(ServerConn, row, addr=row["addr"] or "", link=row["link"] or "",
                 application_name=row["application_name"] or "",
                 connect_time=timestamp(row["connect_time"]))


def _database(row: dict[str, Any]) -> PooledDatabase:
    return _make(PooledDatabase, row)


class ConsoleClient:
    """Holds one PgBouncer target's console connection; ``poll`` reads a PoolerSnapshot."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def connect(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        try:
            # No prepared statements: psycopg prepares a query run 5 times, and the console
            # answers "extended query protocol not supported by admin console".
            self._conn = psycopg.connect(console_string(self.target), autocommit=True,
                                         row_factory=dict_row, prepare_threshold=None)
        except (psycopg.Error, OSError) as exc:
            raise classify(exc, self.target.name, connecting=True) from None
        log.info("connected", extra={"target": self.target.name, "pgbouncer": self.version})

    @property
    def version(self) -> str:
        assert self._conn is not None
        return self._conn.info.parameter_status("server_version") or "unknown"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def poll(self) -> PoolerSnapshot:
        self.connect()
        assert self._conn is not None
        try:
            return self._read(self._conn)
        except (psycopg.Error, KeyError) as exc:
            error = classify(exc, self.target.name)
            if self._conn.broken or error.kind == "connect":
                self.close()
            raise error from None

    def _read(self, conn: psycopg.Connection[dict[str, Any]]) -> PoolerSnapshot:
        def show(what: str) -> list[dict[str, Any]]:
            rows = conn.execute(f"SHOW {what}").fetchall()
            return [r for r in rows if r.get("database", r.get("name")) != ADMIN_DATABASE]

        taken_at = datetime.now(UTC)
        config = {r["key"]: r["value"] for r in conn.execute("SHOW CONFIG").fetchall()}
        return PoolerSnapshot(
            target=self.target.name,
            taken_at=taken_at,
            version=self.version,
            max_client_conn=int(config["max_client_conn"]),
            pools=tuple(map(_pool, show("POOLS"))),
            clients=tuple(map(_client, show("CLIENTS"))),
            servers=tuple(map(_server, show("SERVERS"))),
            databases=tuple(map(_database, show("DATABASES"))),
        )
