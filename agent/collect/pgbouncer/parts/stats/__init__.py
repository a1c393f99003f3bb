"""``SHOW STATS``: per database, PgBouncer's counters since it started (transactions, queries,
server assignments, bytes, time in transactions, in queries and waiting).

Columns are read by name, each where the PgBouncer has it: 1.18 has no
``total_server_assignment_count`` (1.23+), PgBouncer before 1.8 said ``total_requests`` and had
no transaction or wait columns. A missing column leaves its field None and its metric
unexported; the others still are. PgBouncer's microseconds become seconds here.

The ``avg_*`` columns are not read: they cover PgBouncer's own ``stats_period`` (60 s by
default) and ``avg_wait_time`` changed meaning between versions (1.18: waited per second;
later: per assignment). Rates of the counters over any interval say the same, exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..... import contract as c
from ....part import ConsolePart, ConsoleRows, Index, Point

MICROSECONDS = 1e6


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    """One ``SHOW STATS`` row (a PgBouncer database); times in seconds, None: not shown by
    this PgBouncer. Query and transaction times run from the client's request, so they
    include its wait for a server connection (``total_wait_time``; measured on 1.18)."""

    database: str
    total_xact_count: int | None
    total_query_count: int | None
    total_server_assignment_count: int | None
    total_received: int | None
    total_sent: int | None
    total_xact_time: float | None
    total_query_time: float | None
    total_wait_time: float | None


BEFORE_1_8 = {"total_query_count": "total_requests"}
"""Names PgBouncer 1.8 changed, by today's name."""
FIELDS = tuple(f.name for f in dataclasses.fields(DatabaseStats) if f.name != "database")


def _position(ix: Index, field: str) -> int | None:
    """The field's column, under its pre-1.8 name if need be; None if this PgBouncer has
    neither."""
    return next((ix[name] for name in (field, BEFORE_1_8.get(field)) if name in ix), None)


def _value(field: str, raw: Decimal | int | None) -> float | int | None:
    """PgBouncer's numeric as the field's type: seconds for times, else a count."""
    if raw is None:
        return None
    return float(raw) / MICROSECONDS if field.endswith("_time") else int(raw)


def _stats(rows: ConsoleRows, ix: Index) -> tuple[DatabaseStats, ...]:
    found = {f: i for f in FIELDS if (i := _position(ix, f)) is not None}
    db = ix["database"]

    def row(r: tuple[Any, ...]) -> DatabaseStats:
        values: dict[str, Any] = {f: _value(f, r[found[f]]) if f in found else None
                                  for f in FIELDS}
        return DatabaseStats(r[db], **values)

    return tuple(row(r) for r in rows)


COUNTERS: tuple[tuple[c.MetricSpec, str], ...] = (
    (c.POOLER_TRANSACTIONS, "total_xact_count"),
    (c.POOLER_QUERIES, "total_query_count"),
    (c.POOLER_SERVER_ASSIGNMENTS, "total_server_assignment_count"),
    (c.POOLER_RECEIVED, "total_received"),
    (c.POOLER_SENT, "total_sent"),
    (c.POOLER_TRANSACTION_TIME, "total_xact_time"),
    (c.POOLER_QUERY_TIME, "total_query_time"),
    (c.POOLER_WAIT_TIME, "total_wait_time"),
)
"""Each exported counter and the column it comes from."""


def _points(rows: tuple[DatabaseStats, ...]) -> Iterable[Point]:
    for row in rows:
        for spec, field in COUNTERS:
            yield spec, (("database", row.database),), getattr(row, field)


PART = ConsolePart("stats", DatabaseStats, "STATS", _stats, _points)
