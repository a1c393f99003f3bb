"""A collection part: one folder ``agent/collect/parts/<name>/`` with its SQL, row type and points.

The folder holds version-gated SQL files (``<lowest server_version_num>.sql``, see ``queries``)
and an ``__init__.py`` whose ``PART`` names the row type (a frozen, slotted dataclass whose fields
are the SQL's columns), how a row is built from its JSON object, the constant parameters its SQL
needs and, where its metrics are a plain projection of its rows, its points. Parts are found by
``discover``: a new part needs its folder and its metrics' declaration in the contract, nothing
else — unless it reads a ``pg_stat_activity`` column no part read before: the poll materialises
that view once for every part, with the columns listed in ``queries.ACTIVITY_COLUMNS``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Generic, Protocol, TypeVar

from .. import contract

R = TypeVar("R")
Pairs = Iterable[tuple[str, str]]
Point = tuple[contract.MetricSpec, Pairs, float | None]
"""A metric, its attributes besides ``target``, and its value (None: no point)."""
Rows = list[dict[str, Any]]
"""A part's rows as the poll's JSON array gives them."""
Reader = Callable[[Rows], tuple[R, ...]]
"""Builds one connection's rows of a part, poll after poll (a part whose rows depend on what
the previous poll saw keeps that in its reader)."""
PACKAGE = "agent.collect.parts"


class HasParts(Protocol):
    @property
    def parts(self) -> Mapping[str, tuple[Any, ...]]: ...


class PartError(Exception):
    """A part folder that does not declare a part: named, with what is missing."""


def _no_params(server_version_num: int) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class Part(Generic[R]):
    """What one collection part declares; ``of`` reads its rows from a snapshot."""

    name: str
    row: type[R]
    make: Callable[..., R] | None = None
    """Builds a row from its JSON object's keys (default: the row type itself)."""
    params: Callable[[int], Mapping[str, Any]] = _no_params
    """The SQL's own parameters for a server version (limits, names it lists)."""
    points: Callable[[tuple[R, ...]], Iterable[Point]] | None = None
    """The part's metric points, when they follow from its rows alone."""
    cached: bool = False
    """The rows change only when the configuration is reloaded (``pg_conf_load_time()``): the
    client reads them on connect and after a reload, not every poll."""
    reader: Callable[[], Reader[R]] | None = None
    """A per-connection reader, for rows that depend on the previous poll."""

    def build(self, rows: Rows) -> tuple[R, ...]:
        make = self.make or self.row
        return tuple(make(**r) for r in rows)

    def new_reader(self) -> Reader[R]:
        return self.reader() if self.reader is not None else self.build

    def of(self, holder: HasParts) -> tuple[R, ...]:
        """This part's rows (empty if the server lacks the part)."""
        rows: tuple[R, ...] = holder.parts.get(self.name, ())
        return rows


ConsoleRows = list[tuple[Any, ...]]
Index = dict[str, int]
"""Column positions of a SHOW command's result by name: looked up once per command, since
SHOW CLIENTS has a row per client (its rows are most of a PgBouncer poll's CPU at thousands)."""


@dataclass(frozen=True, slots=True)
class ConsolePart(Generic[R]):
    """A PgBouncer admin-console part: one ``SHOW`` command instead of SQL files (the console
    speaks no SQL, so there is nothing to gate by version or to join into one statement), and
    its rows built from the command's tuples by column position."""

    name: str
    row: type[R]
    command: str
    """What follows ``SHOW``."""
    build: Callable[[ConsoleRows, Index], tuple[R, ...]]
    points: Callable[[tuple[R, ...]], Iterable[Point]] | None = None

    def of(self, holder: HasParts) -> tuple[R, ...]:
        rows: tuple[R, ...] = holder.parts.get(self.name, ())
        return rows


K = TypeVar("K", Part[Any], ConsolePart[Any])


@cache
def discover(package: str = PACKAGE) -> tuple[Part[Any], ...]:
    """Every part folder of ``package`` (``agent/collect/parts``), by name; a folder that is not
    a whole part (no SQL file, no ``PART``, no row dataclass, a wrong name) is an error naming
    it."""
    return _found(package, Part)


@cache
def discover_console(package: str) -> tuple[ConsolePart[Any], ...]:
    """Every PgBouncer console part folder of ``package``, checked as ``discover`` does."""
    return _found(package, ConsolePart)


def _found(package: str, kind: type[K]) -> tuple[K, ...]:
    found = []
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__),
                       key=lambda m: m.name):
        where = f"{package}.{info.name}"
        if not info.ispkg:
            raise PartError(f"{where}: a part is a folder (its files and __init__.py)")
        module = importlib.import_module(where)
        part = getattr(module, "PART", None)
        if not isinstance(part, kind):
            raise PartError(f"{where}: no PART = {kind.__name__}(...) declared in its "
                            "__init__.py")
        if part.name != info.name:
            raise PartError(f"{where}: PART.name is {part.name!r}, not the folder's name")
        row = part.row
        if not (isinstance(row, type) and dataclasses.is_dataclass(row)
                and row.__dataclass_params__.frozen  # type: ignore[attr-defined]
                and hasattr(row, "__slots__")):
            raise PartError(f"{where}: PART.row must be a frozen, slotted dataclass "
                            f"(the row type), not {row!r}")
        if kind is Part and not any(
                f.name.endswith(".sql") and f.name.removesuffix(".sql").isdigit()
                for f in (resources.files(package) / info.name).iterdir()):
            raise PartError(f"{where}: no <server_version_num>.sql file in its folder")
        found.append(part)
    return tuple(found)


@cache
def part_params(server_version_num: int, package: str = PACKAGE) -> Mapping[str, Any]:
    """Every part's own SQL parameters for a server; two parts giving one name two values
    is an error naming both."""
    merged: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for part in discover(package):
        for key, value in part.params(server_version_num).items():
            if key in merged and merged[key] != value:
                raise PartError(f"parameter {key}: part {part.name} sets {value!r}, "
                                f"part {owner[key]} {merged[key]!r}")
            merged[key], owner[key] = value, part.name
    return merged


def timestamp(value: str | None) -> datetime | None:
    """A timestamptz as json_agg writes it (ISO 8601 with offset)."""
    return datetime.fromisoformat(value) if value is not None else None
