"""The join of a PgBouncer and the PostgreSQL server behind it (pure): which server backends
PgBouncer holds, and which real client holds each one right now.

A PgBouncer server connection (``SHOW SERVERS``) is the backend whose pid is its
``remote_pid``; the client (``SHOW CLIENTS``) whose ``link`` is the connection's ``ptr`` holds it.
A pid alone could match a backend of another server, so a link also needs the backend to start
within ``START_SLACK_S`` of PgBouncer's ``connect_time`` (when PgBouncer's clock zone is UTC), or
the pooled database to point at the server's address. The two snapshots are taken apart: in a
transaction-mode pool a server connection changes hands between transactions, so a client is
named only for a backend whose transaction began before PgBouncer showed the link.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta

from psycopg import conninfo

from ..collect.parts.sessions import PART as SESSIONS
from ..collect.pgbouncer.snapshot import ClientConn, PoolerSnapshot, ServerConn
from ..collect.snapshot import Session, Snapshot

START_SLACK_S = 2.0
"""connect_time has whole seconds; the backend starts a moment after PgBouncer connects."""

Address = tuple[str, int]
"""(host, port) with unix sockets as ``unix:<dir>`` and localhost as 127.0.0.1."""


def address(host: str | None, port: int | str | None) -> Address:
    """A comparable server address from libpq's or PgBouncer's host and port."""
    h = (host or "").split(",")[0]
    if not h or h.startswith("/"):
        h = f"unix:{h or '/var/run/postgresql'}".rstrip("/")
    elif h == "localhost":
        h = "127.0.0.1"
    return h, int(port or 5432)


@dataclass(frozen=True, slots=True)
class Link:
    """A backend of the server held through PgBouncer, and the client holding it (if any)."""

    pid: int
    pooler: str
    pool_mode: str
    server: ServerConn
    client: ClientConn | None


@dataclass(frozen=True, slots=True)
class Pairing:
    """A PgBouncer in front of this server: its pools there and its links to sessions."""

    pooler: PoolerSnapshot
    databases: tuple[str, ...]
    server_connections: int
    pool_capacity: int
    pools: int
    links: tuple[Link, ...]


def _still_held(link: Link, session: Session, pooler: PoolerSnapshot) -> bool:
    """Session-mode links last the client's session; any other link (transaction or statement
    mode) only the transaction that was open when PgBouncer was read."""
    if link.pool_mode == "session":
        return True
    return session.xact_start is not None and session.xact_start <= pooler.taken_at


def _started_together(server: ServerConn, session: Session) -> bool:
    if server.connect_time is None or session.backend_start is None:
        return False
    delta = session.backend_start - server.connect_time
    return timedelta(0) <= delta <= timedelta(seconds=START_SLACK_S)


def pair(server: Snapshot, server_address: Address | None, pooler: PoolerSnapshot
         ) -> Pairing | None:
    """How ``pooler`` fronts ``server``, or None if it does not (as far as both show)."""
    sessions = {s.pid: s for s in server.sessions}
    by_address = {d.name for d in pooler.databases
                  if server_address is not None and address(d.host, d.port) == server_address}
    by_pid = {sc.database for sc in pooler.servers
              if sc.remote_pid in sessions and _started_together(sc, sessions[sc.remote_pid])}
    databases = by_address | by_pid
    if not databases:
        return None
    clients = {cl.ptr: cl for cl in pooler.clients}
    modes = {(p.database, p.user): p.pool_mode for p in pooler.pools}
    mine = [sc for sc in pooler.servers if sc.database in databases]
    candidates = (Link(sc.remote_pid, pooler.target, modes.get((sc.database, sc.user), ""), sc,
                       clients.get(sc.link)) for sc in mine if sc.remote_pid in sessions)
    links = tuple(link for link in candidates
                  if _still_held(link, sessions[link.pid], pooler))
    pools = [p for p in pooler.pools if p.database in databases]
    return Pairing(pooler, tuple(sorted(databases)), len(mine),
                   sum(pooler.pool_size(p) or 0 for p in pools), len(pools), links)


def relabel(server: Snapshot, pairings: tuple[Pairing, ...]) -> Snapshot:
    """The server snapshot with each pooled session named after the client holding it:
    its application_name and address instead of PgBouncer's."""
    held = {link.pid: link.client for p in pairings for link in p.links if link.client}
    if not held:
        return server
    sessions = tuple(replace(s, application_name=held[s.pid].application_name,
                             client_addr=held[s.pid].addr) if s.pid in held else s
                     for s in server.sessions)
    return replace(server, parts={**server.parts, SESSIONS.name: sessions})


def pairings_for(server: Snapshot, server_dsn: str, poolers: Iterable[PoolerSnapshot]
                 ) -> tuple[Pairing, ...]:
    """The PgBouncers (among the agent's targets) in front of the server at ``server_dsn``."""
    params = conninfo.conninfo_to_dict(server_dsn)
    host = params.get("host")
    at = address(str(host) if host is not None else None, params.get("port"))
    found = (pair(server, at, p) for p in poolers)
    return tuple(p for p in found if p is not None)
