"""Cardinality caps: keep the largest N-1 keys, fold the rest into one overflow key.

The one rule for every capped set: ``cap`` over keys (holder groups, waits, blockers, root
blockers, client processes), ``cap_series`` over a target's series (new connections, in the
points of a poll and in the exported counter). The server applies the same rule to the
activity groups in SQL (``collect/parts/activity_groups``: ``rank < max_groups``, the rest
one row of ``OVERFLOW_VALUE``) so that a storm of distinct groups never leaves the server;
tests/test_core_integration.py checks both give the same groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from ..contract import OVERFLOW_VALUE

V = TypeVar("V")
Key = tuple[str, ...]
Attributes = tuple[tuple[str, str], ...]
"""A series' attributes, ``target`` first."""


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


def cap_series(series: Mapping[Attributes, float], limit: int) -> dict[Attributes, float]:
    """One target's series (same attribute names, ``target`` first) capped like ``cap``: the
    overflow series keeps the target and takes ``OVERFLOW_VALUE`` for every other attribute."""
    if len(series) <= limit:
        return dict(series)
    first = next(iter(series))
    target, names = first[0], tuple(name for name, _ in first[1:])
    values = {tuple(v for _, v in attrs[1:]): n for attrs, n in series.items()}
    capped, _ = cap(values, limit, float, float.__add__)
    return {(target, *zip(names, key, strict=True)): n for key, n in capped.items()}
