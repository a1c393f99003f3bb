"""Attribute every client backend to its holder; account slots, waits, locks and blockers.

Pure: a Snapshot in, an Attribution out. Both the metrics and the diagnosis read it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .. import spec
from ..collect.snapshot import (
    ActivityGroup,
    PartRows,
    Session,
    Snapshot,
    WaitCount,
)
from ..contract import GROUP_DIMENSIONS, HIDDEN
from .cap import Key, cap, merge_into
from .processes import ProcessAttribution, join

IDLE_IN_TRANSACTION = spec.IDLE_IN_TRANSACTION


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


@dataclass(frozen=True, slots=True)
class Group:
    """Client backends of one holder in one state, over the configured dimensions."""

    key: Key
    count: int
    max_state_age: float | None
    max_xact_age: float | None
    opened: int
    young: int

    def merged(self, other: Group) -> Group:
        return Group(self.key, self.count + other.count,
                     _max(self.max_state_age, other.max_state_age),
                     _max(self.max_xact_age, other.max_xact_age),
                     self.opened + other.opened, self.young + other.young)


@dataclass(frozen=True, slots=True)
class LockWaitGroup:
    datname: str
    application_name: str
    locktype: str
    mode: str
    count: int
    max_wait: float | None


@dataclass(frozen=True, slots=True)
class Chain:
    """A root blocker (itself not waiting on a lock) and every session queued behind it."""

    root_pid: int
    root: Session | None
    blocked_pids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Attribution(PartRows):
    target: str
    taken_at: datetime
    server_version_num: int
    dimensions: tuple[str, ...]
    groups: tuple[Group, ...]
    folded: int
    client_backends: int
    max_connections: int | None
    reserved: int
    hidden: int
    waits: tuple[WaitCount, ...]
    lock_waits: tuple[LockWaitGroup, ...]
    blocking: tuple[tuple[Key, int], ...]
    chains: tuple[Chain, ...]
    sessions: tuple[Session, ...]
    churn_window: float
    parts: Mapping[str, tuple[Any, ...]]
    """The snapshot's rows by part: the parts that need no attribution read theirs here."""
    processes: ProcessAttribution | None = None
    """This host's clients by holding process (None: attribution off)."""

    @property
    def usable(self) -> int | None:
        if self.max_connections is None:
            return None
        return max(self.max_connections - self.reserved, 0)

    @property
    def utilization(self) -> float | None:
        usable = self.usable
        return self.client_backends / usable if usable else None

    def value(self, key: Key, dim: str) -> str | None:
        """A group key's value for one dimension, or None if that dimension is configured out."""
        return key[self.dimensions.index(dim)] if dim in self.dimensions else None

    def by_state(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for group in self.groups:
            out[self.value(group.key, "state") or "(all)"] += group.count
        return dict(out)


def project(row: ActivityGroup | Session, dimensions: tuple[str, ...]) -> Key:
    """A row's key over the configured dimensions; NULL names become empty strings."""
    return tuple(str(getattr(row, dim) or "") for dim in dimensions)


def attribute(snapshot: Snapshot, *, dimensions: tuple[str, ...] = GROUP_DIMENSIONS,
              max_groups: int = 200) -> Attribution:
    groups: dict[Key, Group] = {}
    merge_into(groups, ((project(g, dimensions), Group(
        project(g, dimensions), g.count, g.max_state_age, g.max_xact_age, g.opened, g.young))
        for g in snapshot.groups), Group.merged)
    capped, folded = cap(groups, max_groups, lambda g: g.count, Group.merged)
    # The overflow group carries the key of the first group merged into it: give it its own.
    ordered = sorted((replace(g, key=k) for k, g in capped.items()),
                     key=lambda g: (-g.count, g.key))

    waits, waits_folded = _cap_waits(snapshot.waits, max_groups)
    blocking, blocking_folded = _blocking(snapshot.sessions, dimensions, max_groups)
    max_conn = snapshot.setting("max_connections")
    reserved = sum(int(snapshot.setting(n) or 0)
                   for n in ("superuser_reserved_connections", "reserved_connections"))
    return Attribution(
        target=snapshot.target,
        taken_at=snapshot.taken_at,
        server_version_num=snapshot.server_version_num,
        dimensions=dimensions,
        groups=tuple(ordered),
        folded=sum(g.folded for g in snapshot.groups) + folded + waits_folded + blocking_folded,
        client_backends=sum(g.count for g in snapshot.groups),
        max_connections=int(max_conn) if max_conn is not None else None,
        reserved=reserved,
        hidden=sum(g.count for g in snapshot.groups if g.state == HIDDEN),
        waits=waits,
        lock_waits=_lock_waits(snapshot),
        blocking=blocking,
        chains=chains(snapshot.sessions),
        sessions=snapshot.sessions,
        churn_window=snapshot.churn_window,
        parts=snapshot.parts,
        processes=join(snapshot.client_ports, snapshot.host),
    )


def _cap_waits(waits: tuple[WaitCount, ...], limit: int) -> tuple[tuple[WaitCount, ...], int]:
    def merged(a: WaitCount, b: WaitCount) -> WaitCount:
        return WaitCount(a.datname, a.usename, a.application_name, a.wait_event_type,
                         a.wait_event, a.count + b.count)

    by_key: dict[Key, WaitCount] = {}
    merge_into(by_key, (((w.datname or "", w.usename or "", w.application_name,
                          w.wait_event_type, w.wait_event), w) for w in waits), merged)
    capped, folded = cap(by_key, limit, lambda w: w.count, merged)
    return tuple(WaitCount(k[0], k[1], k[2], k[3], k[4], w.count)
                 for k, w in sorted(capped.items())), folded


def _lock_waits(snapshot: Snapshot) -> tuple[LockWaitGroup, ...]:
    sessions = {s.pid: s for s in snapshot.sessions}
    acc: dict[tuple[str, str, str, str], tuple[int, float | None]] = {}
    for lw in snapshot.lock_waits:
        s = sessions.get(lw.pid)
        key = (s.datname or "" if s else "", s.application_name if s else HIDDEN,
               lw.locktype, lw.mode)
        count, age = acc.get(key, (0, None))
        acc[key] = (count + 1, _max(age, lw.wait_age))
    return tuple(LockWaitGroup(*k, count=c, max_wait=a) for k, (c, a) in sorted(acc.items()))


def _blocking(sessions: tuple[Session, ...], dimensions: tuple[str, ...],
              limit: int) -> tuple[tuple[tuple[Key, int], ...], int]:
    """Per blocker group, how many distinct sessions its sessions block directly."""
    by_pid = {s.pid: s for s in sessions}
    blocked: dict[Key, set[int]] = defaultdict(set)
    for s in sessions:
        for pid in s.blocking_pids:
            blocker = by_pid.get(pid)
            key = project(blocker, dimensions) if blocker else (HIDDEN,) * len(dimensions)
            blocked[key].add(s.pid)
    acc = {key: len(pids) for key, pids in blocked.items()}
    capped, folded = cap(acc, limit, float, int.__add__)
    return tuple(sorted(capped.items(), key=lambda kv: (-kv[1], kv[0]))), folded


def chains(sessions: tuple[Session, ...]) -> tuple[Chain, ...]:
    """Root blockers with everything transitively blocked behind them, largest first."""
    by_pid = {s.pid: s for s in sessions}
    waiters_of: dict[int, list[int]] = defaultdict(list)
    for s in sessions:
        for pid in s.blocking_pids:
            waiters_of[pid].append(s.pid)
    roots = [pid for pid in waiters_of
             if pid not in by_pid or not by_pid[pid].blocking_pids]
    out = []
    for root in roots:
        seen: set[int] = set()
        stack = list(waiters_of[root])
        while stack:
            pid = stack.pop()
            if pid not in seen and pid != root:
                seen.add(pid)
                stack.extend(waiters_of.get(pid, ()))
        out.append(Chain(root, by_pid.get(root), tuple(sorted(seen))))
    return tuple(sorted(out, key=lambda c: (-len(c.blocked_pids), c.root_pid)))
