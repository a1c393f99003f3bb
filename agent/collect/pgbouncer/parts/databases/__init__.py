"""``SHOW DATABASES``: the databases PgBouncer serves, their pool sizes and connection caps."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..... import contract as c
from ....part import ConsolePart, ConsoleRows, Index, Point
from ...rows import by_fields


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


def _databases(rows: ConsoleRows, ix: Index) -> tuple[PooledDatabase, ...]:
    return by_fields(PooledDatabase, rows, ix)


def _points(rows: tuple[PooledDatabase, ...]) -> Iterable[Point]:
    for db in rows:
        if db.max_connections:
            yield c.POOLER_DATABASE_MAX, (("database", db.name),), db.max_connections


PART = ConsolePart("databases", PooledDatabase, "DATABASES", _databases, _points)
