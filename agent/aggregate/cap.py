"""Cardinality caps: keep the largest N-1 keys, fold the rest into one overflow key."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from ..contract import OVERFLOW_VALUE

V = TypeVar("V")
Key = tuple[str, ...]


def merge_into(acc: dict[Key, V], items: Iterable[tuple[Key, V]],
               merge: Callable[[V, V], V]) -> dict[Key, V]:
    """Add ``items`` to ``acc``, merging values of equal keys."""
    for key, value in items:
        acc[key] = merge(acc[key], value) if key in acc else value
    return acc


def cap(values: dict[Key, V], limit: int, size: Callable[[V], float],
        merge: Callable[[V, V], V]) -> tuple[dict[Key, V], int]:
    """At most ``limit`` keys: the ``limit - 1`` largest by ``size`` and one overflow key.

    Returns the capped mapping and how many keys were folded. Ties break on the key so the
    result does not depend on input order.
    """
    if len(values) <= limit:
        return values, 0
    ranked = sorted(values.items(), key=lambda kv: (-size(kv[1]), kv[0]))
    kept = dict(ranked[: limit - 1])
    rest = ranked[limit - 1:]
    width = len(rest[0][0])
    overflow_key = (OVERFLOW_VALUE,) * width
    merge_into(kept, ((overflow_key, v) for _, v in rest), merge)
    return kept, len(rest)
