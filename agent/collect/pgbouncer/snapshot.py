"""Typed, immutable snapshot of one PgBouncer poll; field names follow the SHOW columns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Pool:
    """One ``SHOW POOLS`` row: a (database, user) pool; ``maxwait`` in seconds."""

    database: str
    user: str
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    sv_used: int
    sv_tested: int
    sv_login: int
    maxwait: float
    pool_mode: str


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


@dataclass(frozen=True, slots=True)
class PooledDatabase:
    """One ``SHOW DATABASES`` row; ``max_connections`` 0 means no max_db_connections."""

    name: str
    host: str | None
    port: int
    database: str
    pool_size: int
    reserve_pool: int
    pool_mode: str | None
    max_connections: int
    current_connections: int


@dataclass(frozen=True, slots=True)
class PoolerSnapshot:
    """Everything one poll of PgBouncer's admin console read (its own database left out)."""

    target: str
    taken_at: datetime
    version: str
    max_client_conn: int
    pools: tuple[Pool, ...]
    clients: tuple[ClientConn, ...]
    servers: tuple[ServerConn, ...]
    databases: tuple[PooledDatabase, ...]

    def database(self, name: str) -> PooledDatabase | None:
        return next((d for d in self.databases if d.name == name), None)

    def pool_size(self, pool: Pool) -> int | None:
        """Server connections the pool may open: pool_size + reserve_pool of its database."""
        db = self.database(pool.database)
        return db.pool_size + db.reserve_pool if db else None
