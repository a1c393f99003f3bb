"""What busy sessions do, per application: statement ages, lock waits and (with show_queries)
their most frequent statements, normalised here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...normalise import normalise_query
from ...part import Part


@dataclass(frozen=True, slots=True)
class TopStatement:
    """A frequent statement among an application's active sessions (only with show_queries)."""

    query: str
    query_id: int | None
    count: int


@dataclass(frozen=True, slots=True)
class ActiveStatements:
    """An application's active client sessions: statement ages and lock waits.

    The evidence for a busy pool: what its connections are doing, and for how long.
    """

    application_name: str
    count: int
    max_age: float
    median_age: float
    blocked: int
    top: tuple[TopStatement, ...] = ()


def _statements(**row: Any) -> ActiveStatements:
    top = _normalised(TopStatement(**t) for t in row.pop("top") or ())
    return ActiveStatements(**row, top=top)


def _normalised(statements: Iterable[TopStatement]) -> tuple[TopStatement, ...]:
    """Statements with literals replaced by ``?``, merged, most frequent first."""
    merged: dict[tuple[str, int | None], int] = {}
    for t in statements:
        key = (normalise_query(t.query), t.query_id)
        merged[key] = merged.get(key, 0) + t.count
    return tuple(TopStatement(q, i, n) for (q, i), n in
                 sorted(merged.items(), key=lambda kv: (-kv[1], kv[0][0])))


PART = Part("statements", ActiveStatements, _statements)
