"""``SHOW CLIENTS``: one row per client connection (thousands: read by column position)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..... import contract
from ....part import ConsolePart, ConsoleRows, Index
from ...rows import timestamp


@dataclass(frozen=True, slots=True)
class ClientConn:
    """One ``SHOW CLIENTS`` row; ``link`` is the ``ptr`` of the server connection it holds."""

    user: str
    database: str
    state: str
    addr: str
    port: int
    application_name: str
    connect_time: datetime | None
    wait: float
    ptr: str
    link: str


def _clients(rows: ConsoleRows, ix: Index) -> tuple[ClientConn, ...]:
    user, db, state, addr, port, app, ct, wait, wait_us, ptr, link = (ix[c] for c in (
        "user", "database", "state", "addr", "port", "application_name", "connect_time",
        "wait", "wait_us", "ptr", "link"))
    unset = contract.UNSET_APPLICATION
    return tuple(ClientConn(user=r[user], database=r[db], state=r[state], addr=r[addr] or "",
                            port=r[port], application_name=r[app] or unset,
                            connect_time=timestamp(r[ct]), wait=r[wait] + r[wait_us] / 1e6,
                            ptr=r[ptr], link=r[link] or "") for r in rows)


PART = ConsolePart("clients", ClientConn, "CLIENTS", _clients)
