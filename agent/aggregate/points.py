"""Metric points from an Attribution, named by the contract (pure): the points that need the
attribution are made here, the collection parts yield their own (``Part.points``).

A point is (attributes, value). Attributes of group dimensions that the configuration drops are
left out of every metric, not just of G, so dropping ``client_addr`` bounds all series.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

from .. import contract as c
from ..collect.part import Pairs, Point, discover
from .attribution import Attribution, Chain, project
from .cap import Attributes as Attributes
from .cap import Key, cap, cap_series, merge_into
from .processes import process_points

Points = dict[str, list[tuple[Attributes, float]]]


@dataclass(frozen=True, slots=True)
class PointSet:
    """The gauges' and absolute counters' points of one poll, and the deltas of ``opened``."""

    points: Points
    opened: list[tuple[Attributes, float]]


def _attrs(target: str, dimensions: tuple[str, ...], pairs: Iterable[tuple[str, str]]
           ) -> Attributes:
    dropped = set(c.GROUP_DIMENSIONS) - set(dimensions)
    return (("target", target), *((k, v) for k, v in pairs if k not in dropped))


def points(a: Attribution, *, max_groups: int = 200,
           caught: Iterable[tuple[str, str]] = ()) -> PointSet:
    """The poll's points; ``caught`` are the (application_name, client_addr) of backends a
    catch burst saw since the poll (new backends too, which the next poll does not count)."""
    out: Points = {spec.name: [] for spec in c.METRICS}
    _group_points(a, out)
    for spec, pairs, value in chain(_slot_points(a), _wait_points(a), _lock_points(a),
                                    _blocker_points(a, max_groups), _part_points(a)):
        if value is not None:
            out[spec.name].append((_attrs(a.target, a.dimensions, pairs), float(value)))
    for name, pts in process_points(a.target, a.processes, max_groups).items():
        out[name] += pts
    return PointSet({name: _merged(name, pts) for name, pts in out.items()},
                    _opened(a, max_groups, caught))


def _group_points(a: Attribution, out: Points) -> None:
    """The hot loop (one pass per group): group keys already hold only configured dimensions."""
    target = (("target", a.target),)
    count, state_age, xact_age = (out[m.name] for m in (c.CONNECTION_COUNT, c.STATE_AGE_MAX,
                                                        c.TRANSACTION_AGE_MAX))
    for g in a.groups:
        attrs = target + tuple(zip(a.dimensions, g.key, strict=True))
        count.append((attrs, float(g.count)))
        if g.max_state_age is not None:
            state_age.append((attrs, float(g.max_state_age)))
        if g.max_xact_age is not None:
            xact_age.append((attrs, float(g.max_xact_age)))


def _slot_points(a: Attribution) -> Iterator[Point]:
    yield c.CONNECTION_MAX, (), a.max_connections
    yield c.CONNECTION_RESERVED, (), a.reserved if a.max_connections is not None else None
    yield c.CONNECTION_UTILIZATION, (), a.utilization
    yield c.GROUPS_FOLDED, (), a.folded
    yield c.SESSIONS_HIDDEN, (), a.hidden


def _wait_points(a: Attribution) -> Iterator[Point]:
    for w in a.waits:
        yield c.CONNECTION_WAITING, (("datname", w.datname or ""), ("usename", w.usename or ""),
                                     ("application_name", w.application_name),
                                     ("wait_event_type", w.wait_event_type),
                                     ("wait_event", w.wait_event)), w.count


def _lock_points(a: Attribution) -> Iterator[Point]:
    max_wait: dict[Key, float] = {}
    for lw in a.lock_waits:
        yield c.LOCK_WAITING, (("datname", lw.datname), ("application_name", lw.application_name),
                               ("locktype", lw.locktype), ("mode", lw.mode)), lw.count
        if lw.max_wait is not None:
            wait_key = (lw.datname, lw.application_name)
            max_wait[wait_key] = max(max_wait.get(wait_key, 0.0), lw.max_wait)
    for (datname, app), wait in sorted(max_wait.items()):
        yield c.LOCK_WAIT_TIME_MAX, (("datname", datname), ("application_name", app)), wait


def _blocker_points(a: Attribution, max_groups: int) -> Iterator[Point]:
    def group_pairs(key: Key) -> Pairs:
        return tuple(zip(a.dimensions, key, strict=True))

    for key, n in a.blocking:
        yield c.LOCK_BLOCKING, group_pairs(key), n
    roots: dict[Key, int] = {}
    merge_into(roots, ((_root_key(a, ch), len(ch.blocked_pids)) for ch in a.chains), int.__add__)
    for key, n in sorted(cap(roots, max_groups, float, int.__add__)[0].items()):
        yield c.LOCK_ROOT_BLOCKING, group_pairs(key), n
    for ch in a.chains[:c.ROOT_BLOCKERS_SHOWN]:  # largest first
        yield (c.LOCK_ROOT_BLOCKER, (("pid", str(ch.root_pid)), *group_pairs(_root_key(a, ch))),
               len(ch.blocked_pids))


def _part_points(a: Attribution) -> Iterator[Point]:
    """The points of the parts whose metrics follow from their rows alone (their folders')."""
    for part in discover():
        if part.points is not None:
            yield from part.points(part.of(a))


def _root_key(a: Attribution, chain: Chain) -> Key:
    """The root blocker's group; a root the agent cannot see (no session row) is hidden."""
    if chain.root is None:
        return (c.HIDDEN,) * len(a.dimensions)
    return project(chain.root, a.dimensions)


_MAXIMA = frozenset((c.STATE_AGE_MAX.name, c.TRANSACTION_AGE_MAX.name,
                     c.LOCK_WAIT_TIME_MAX.name))


def _merged(name: str, pts: list[tuple[Attributes, float]]) -> list[tuple[Attributes, float]]:
    """One point per attribute set: dropping a dimension (say ``datname``) makes rows that
    differed only by it collide, and an instrument keeps one observation per attribute set.
    Counts add up; maxima take the larger."""
    if len({attrs for attrs, _ in pts}) == len(pts):
        return pts
    merged: dict[Attributes, float] = {}
    for attrs, value in pts:
        if attrs not in merged:
            merged[attrs] = value
        elif name in _MAXIMA:
            merged[attrs] = max(merged[attrs], value)
        else:
            merged[attrs] += value
    return list(merged.items())


def _opened(a: Attribution, max_groups: int, caught: Iterable[tuple[str, str]]
            ) -> list[tuple[Attributes, float]]:
    """New backends since the last poll per (application_name, client_addr), capped."""
    new = [((a.value(g.key, "application_name") or "", a.value(g.key, "client_addr") or ""),
            g.opened) for g in a.groups if g.opened]
    acc: dict[Attributes, float] = {}
    for (app, addr), n in chain(new, ((pair, 1) for pair in caught)):
        attrs = _attrs(a.target, a.dimensions, (("application_name", app), ("client_addr", addr)))
        acc[attrs] = acc.get(attrs, 0.0) + n
    return sorted(cap_series(acc, max_groups).items())
