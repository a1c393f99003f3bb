"""Metric points from an Attribution, named by the contract (pure).

A point is (attributes, value). Attributes of group dimensions that the configuration drops are
left out of every metric, not just of G, so dropping ``client_addr`` bounds all series.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import contract as c
from .attribution import Attribution, Chain, project
from .cap import Key, cap, merge_into
from .processes import process_points

Attributes = tuple[tuple[str, str], ...]
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


def points(a: Attribution, *, max_groups: int = 200) -> PointSet:
    out: Points = {spec.name: [] for spec in c.METRICS}

    def add(spec: c.MetricSpec, pairs: Iterable[tuple[str, str]], value: float | None) -> None:
        if value is not None:
            out[spec.name].append((_attrs(a.target, a.dimensions, pairs), float(value)))

    def group_pairs(key: Key) -> list[tuple[str, str]]:
        return list(zip(a.dimensions, key, strict=True))

    # The hot loop (one pass per group): group keys already hold only configured dimensions.
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
    add(c.CONNECTION_MAX, (), a.max_connections)
    add(c.CONNECTION_RESERVED, (), a.reserved if a.max_connections is not None else None)
    add(c.CONNECTION_UTILIZATION, (), a.utilization)
    for w in a.waits:
        add(c.CONNECTION_WAITING, (("datname", w.datname or ""), ("usename", w.usename or ""),
                                   ("application_name", w.application_name),
                                   ("wait_event_type", w.wait_event_type),
                                   ("wait_event", w.wait_event)), w.count)
    max_wait: dict[Key, float] = {}
    for lw in a.lock_waits:
        add(c.LOCK_WAITING, (("datname", lw.datname), ("application_name", lw.application_name),
                             ("locktype", lw.locktype), ("mode", lw.mode)), lw.count)
        if lw.max_wait is not None:
            wait_key = (lw.datname, lw.application_name)
            max_wait[wait_key] = max(max_wait.get(wait_key, 0.0), lw.max_wait)
    for (datname, app), wait in sorted(max_wait.items()):
        add(c.LOCK_WAIT_TIME_MAX, (("datname", datname), ("application_name", app)), wait)
    for key, n in a.blocking:
        add(c.LOCK_BLOCKING, group_pairs(key), n)
    roots: dict[Key, int] = {}
    merge_into(roots, ((_root_key(a, ch), len(ch.blocked_pids)) for ch in a.chains), int.__add__)
    for key, n in sorted(cap(roots, max_groups, float, int.__add__)[0].items()):
        add(c.LOCK_ROOT_BLOCKING, group_pairs(key), n)
    for ch in a.chains[:c.ROOT_BLOCKERS_SHOWN]:  # largest first
        add(c.LOCK_ROOT_BLOCKER, (("pid", str(ch.root_pid)), *group_pairs(_root_key(a, ch))),
            len(ch.blocked_pids))
    for backend_type, n in a.backend_types:
        add(c.BACKEND_COUNT, (("backend_type", backend_type),), n)
    for limit in a.limits:
        add(c.CONNECTION_LIMIT, (("scope", limit.scope), ("name", limit.name)), limit.limit)
    for db in a.databases:
        for outcome, value in zip(c.SESSION_OUTCOMES, (db.sessions, db.sessions_abandoned,
                                                       db.sessions_fatal, db.sessions_killed),
                                  strict=True):
            add(c.SESSIONS, (("datname", db.datname), ("outcome", outcome)), value)
    for setting in a.settings:
        add(c.SETTING, (("name", setting.name),), setting.value)
    add(c.GROUPS_FOLDED, (), a.folded)
    add(c.SESSIONS_HIDDEN, (), a.hidden)
    for name, pts in process_points(a.target, a.processes, max_groups).items():
        out[name] += pts
    return PointSet({name: _merged(name, pts) for name, pts in out.items()},
                    _opened(a, max_groups))


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


def _opened(a: Attribution, max_groups: int) -> list[tuple[Attributes, float]]:
    """New backends since the last poll per (application_name, client_addr), capped."""
    acc: dict[Key, int] = {}
    merge_into(acc, (((a.value(g.key, "application_name") or "",
                       a.value(g.key, "client_addr") or ""), g.opened)
                     for g in a.groups if g.opened), int.__add__)
    capped, _ = cap(acc, max_groups, float, int.__add__)
    return [(_attrs(a.target, a.dimensions, (("application_name", app), ("client_addr", addr))),
             float(n)) for (app, addr), n in sorted(capped.items())]
