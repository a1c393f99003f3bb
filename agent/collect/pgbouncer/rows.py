"""Helpers of the console parts: PgBouncer's timestamps, and rows built from named columns."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from ..part import ConsoleRows, Index

R = TypeVar("R")


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


def by_fields(cls: type[R], rows: ConsoleRows, ix: Index, **computed: Any) -> tuple[R, ...]:
    """Small results (pools, databases) as row objects from the columns their fields name;
    a missing column fails loudly (KeyError), columns a newer PgBouncer adds are ignored."""
    names = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
             if f.name not in computed]
    return tuple(cls(**{n: row[ix[n]] for n in names},
                     **{n: make(row) for n, make in computed.items()}) for row in rows)
