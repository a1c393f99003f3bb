"""Every backend by type: the server's own processes beside the client backends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .... import contract as c
from ...part import Part, Point


@dataclass(frozen=True, slots=True)
class BackendTypeCount:
    backend_type: str
    count: int


def _points(rows: tuple[BackendTypeCount, ...]) -> Iterable[Point]:
    for b in rows:
        yield c.BACKEND_COUNT, (("backend_type", b.backend_type),), b.count


PART = Part("backend_types", BackendTypeCount, points=_points)
