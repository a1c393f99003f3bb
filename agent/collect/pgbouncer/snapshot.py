"""Typed, immutable snapshot of one PgBouncer poll: each console part's rows by part name (see
``parts``), with typed access to the parts the join and the diagnosis read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .parts import clients as _clients
from .parts import databases as _databases
from .parts import pools as _pools
from .parts import servers as _servers
from .parts import stats as _stats
from .parts.clients import ClientConn
from .parts.databases import PooledDatabase
from .parts.pools import Pool
from .parts.servers import ServerConn
from .parts.stats import DatabaseStats


@dataclass(frozen=True, slots=True)
class PoolerSnapshot:
    """Everything one poll of PgBouncer's admin console read (its own database left out)."""

    target: str
    taken_at: datetime
    version: str
    max_client_conn: int
    parts: Mapping[str, tuple[Any, ...]]
    """Each console part's rows by part name."""

    @property
    def pools(self) -> tuple[Pool, ...]:
        return _pools.PART.of(self)

    @property
    def clients(self) -> tuple[ClientConn, ...]:
        return _clients.PART.of(self)

    @property
    def servers(self) -> tuple[ServerConn, ...]:
        return _servers.PART.of(self)

    @property
    def databases(self) -> tuple[PooledDatabase, ...]:
        return _databases.PART.of(self)

    @property
    def stats(self) -> tuple[DatabaseStats, ...]:
        return _stats.PART.of(self)

    def database_stats(self, name: str) -> DatabaseStats | None:
        return next((d for d in self.stats if d.database == name), None)

    def database(self, name: str) -> PooledDatabase | None:
        return next((d for d in self.databases if d.name == name), None)

    def pool_size(self, pool: Pool) -> int | None:
        """Server connections the pool may open: pool_size + reserve_pool of its database."""
        db = self.database(pool.database)
        return db.pool_size + db.reserve_pool if db else None


__all__ = ["ClientConn", "DatabaseStats", "Pool", "PooledDatabase", "PoolerSnapshot",
           "ServerConn"]
