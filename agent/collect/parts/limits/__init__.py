"""Role and database connection limits that are set, with their current client backends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .... import contract as c
from ...part import Part, Point


@dataclass(frozen=True, slots=True)
class ConnectionLimit:
    scope: str  # "role" or "database"
    name: str
    limit: int
    current: int


def _points(rows: tuple[ConnectionLimit, ...]) -> Iterable[Point]:
    for limit in rows:
        yield c.CONNECTION_LIMIT, (("scope", limit.scope), ("name", limit.name)), limit.limit


PART = Part("limits", ConnectionLimit, points=_points)
