"""``SHOW SERVERS``: one row per server connection; ``remote_pid`` is its PostgreSQL backend."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ....part import ConsolePart, ConsoleRows, Index
from ...rows import timestamp


@dataclass(frozen=True, slots=True)
class ServerConn:
    """One ``SHOW SERVERS`` row; ``remote_pid`` is the PostgreSQL backend's pid."""

    user: str
    database: str
    state: str
    addr: str
    port: int
    application_name: str
    connect_time: datetime | None
    ptr: str
    link: str
    remote_pid: int


def _servers(rows: ConsoleRows, ix: Index) -> tuple[ServerConn, ...]:
    user, db, state, addr, port, app, ct, ptr, link, pid = (ix[c] for c in (
        "user", "database", "state", "addr", "port", "application_name", "connect_time",
        "ptr", "link", "remote_pid"))
    return tuple(ServerConn(user=r[user], database=r[db], state=r[state], addr=r[addr] or "",
                            port=r[port], application_name=r[app] or "",
                            connect_time=timestamp(r[ct]), ptr=r[ptr], link=r[link] or "",
                            remote_pid=r[pid]) for r in rows)


PART = ConsolePart("servers", ServerConn, "SERVERS", _servers)
