"""The latest points of every target, and the agent's own counters and poll-time histogram.

Each target keeps two kinds of series: the points of its last poll (swapped in whole under a
lock; collection, OTLP or a scrape, reads them) and the series kept across polls: the agent's
own (``up``, errors, skipped polls) and the cumulative ``opened`` counter. A target that fails
loses its polled points at once (no stale values) and reads ``up = 0``. Nothing stale is
exported as current: once data published with ``fresh_for`` is that old without a newer poll
(a backstop behind the client's deadline), its polled points are dropped and the kept series
read as ``WHEN_STALE`` says. Writes name their ``owner`` (the target's runner): once a target is
removed, or replaced under the same name, a poll still in flight publishes nothing.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

from .. import contract as c
from ..aggregate.cap import cap_series
from ..aggregate.points import Attributes, Points, PointSet


@dataclass(slots=True)
class Durations:
    """A cumulative histogram of poll durations over ``contract.POLL_DURATION_BUCKETS``."""

    start_ns: int
    bucket_counts: list[int] = field(
        default_factory=lambda: [0] * (len(c.POLL_DURATION_BUCKETS) + 1))
    count: int = 0
    sum: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")

    def record(self, seconds: float) -> None:
        self.bucket_counts[bisect.bisect_left(c.POLL_DURATION_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)


WHEN_STALE: dict[str, float] = {c.AGENT_UP.name: 0.0}
"""What a kept series reads once its target's data is stale; the others (counters) keep their
value."""

Series = dict[Attributes, float]


@dataclass(slots=True)
class _Target:
    """One target's series: ``kept`` outlive a poll (metric name -> attributes -> value),
    ``polled`` are the last poll's points."""

    started_ns: int
    kept: dict[str, Series]
    polled: Points = field(default_factory=dict)
    pending: Series = field(default_factory=dict)
    """``opened`` deltas of series first reported (at 0) by the last poll."""
    durations: Durations | None = None
    expires: float | None = None

    def set(self, name: str, attrs: Attributes, value: float) -> None:
        self.kept.setdefault(name, {})[attrs] = value

    def add(self, name: str, attrs: Attributes, delta: float) -> None:
        series = self.kept.setdefault(name, {})
        series[attrs] = series.get(attrs, 0.0) + delta

    def read(self, name: str, now: float) -> list[tuple[Attributes, float]]:
        kept = list(self.kept.get(name, {}).items())
        if self.expires is None or now <= self.expires:
            return kept + list(self.polled.get(name, ()))
        return [(attrs, WHEN_STALE.get(name, value)) for attrs, value in kept]


class MetricsState:
    def __init__(self, max_groups: int = 200) -> None:
        self._lock = threading.Lock()
        self._max_groups = max_groups
        self._targets: dict[str, _Target] = {}
        self._owners: dict[str, object] = {}

    def claim(self, target: str, owner: object) -> None:
        """From now on only ``owner``'s writes for ``target`` count (see ``remove``)."""
        with self._lock:
            self._owners[target] = owner

    def _accepts(self, target: str, owner: object | None) -> bool:
        return owner is None or self._owners.get(target) is owner

    def set_max_groups(self, max_groups: int) -> None:
        """A new cap applies at once: every target's opened counter is folded to it."""
        with self._lock:
            self._max_groups = max_groups
            for t in self._targets.values():
                self._cap_opened(t)

    def _cap_opened(self, t: _Target) -> None:
        opened = t.kept.get(c.CONNECTION_OPENED.name, {})
        if len(opened) > self._max_groups:
            t.kept[c.CONNECTION_OPENED.name] = cap_series(opened, self._max_groups)

    def _known(self, target: str) -> _Target:
        """A target's record; its agent counters start at 0 for every kind, so ``increase()``
        sees the first error or skipped poll (a series born at 1 has no increase)."""
        t = self._targets.get(target)
        if t is None:
            me = (("target", target),)
            t = self._targets[target] = _Target(time.time_ns(), {
                c.POLL_ERRORS.name: {(*me, ("error", k)): 0.0 for k in c.POLL_ERROR_KINDS},
                c.POLL_SKIPPED.name: {me: 0.0},
                c.CONNECTION_OPENED.name: {}})
        return t

    def publish(self, target: str, point_set: PointSet, *, owner: object | None = None,
                fresh_for: float | None = None) -> None:
        with self._lock:
            if not self._accepts(target, owner):
                return
            t = self._known(target)
            t.polled = point_set.points
            if fresh_for is not None:
                t.expires = time.monotonic() + fresh_for
            opened = c.CONNECTION_OPENED.name
            for attrs, delta in t.pending.items():
                t.add(opened, attrs, delta)
            # A new series is first reported at 0 and gets its count one poll later, so that
            # Prometheus' increase() and rate() see the first connections too.
            t.pending = {}
            for attrs, delta in point_set.opened:
                if attrs in t.kept[opened]:
                    t.add(opened, attrs, delta)
                else:
                    t.set(opened, attrs, 0.0)
                    t.pending[attrs] = delta
            self._cap_opened(t)
            t.set(c.AGENT_UP.name, (("target", target),), 1.0)

    def fail(self, target: str, kind: str, *, owner: object | None = None) -> None:
        with self._lock:
            if not self._accepts(target, owner):
                return
            t = self._known(target)
            t.polled = {}
            t.add(c.POLL_ERRORS.name, (("target", target), ("error", kind)), 1.0)
            t.set(c.AGENT_UP.name, (("target", target),), 0.0)

    def skipped(self, target: str) -> None:
        with self._lock:
            if target not in self._owners:
                return
            self._known(target).add(c.POLL_SKIPPED.name, (("target", target),), 1.0)

    def record_duration(self, target: str, seconds: float, *,
                        owner: object | None = None) -> None:
        with self._lock:
            if not self._accepts(target, owner):
                return
            t = self._known(target)
            if t.durations is None:
                t.durations = Durations(t.started_ns)
            t.durations.record(seconds)

    def remove(self, target: str) -> None:
        with self._lock:
            self._targets.pop(target, None)
            self._owners.pop(target, None)

    def durations(self) -> list[tuple[Attributes, Durations]]:
        with self._lock:
            return [((("target", name),), Durations(d.start_ns, list(d.bucket_counts), d.count,
                                                    d.sum, d.min, d.max))
                    for name, t in self._targets.items() if (d := t.durations) is not None]

    def counter(self, name: str) -> list[tuple[Attributes, float, int]]:
        """A cumulative counter's points with the start time of their target's series."""
        with self._lock:
            now = time.monotonic()
            return [(attrs, value, t.started_ns) for t in self._targets.values()
                    for attrs, value in t.read(name, now)]

    def observe(self, name: str) -> list[tuple[Attributes, float]]:
        """Current points of one metric across all targets."""
        with self._lock:
            now = time.monotonic()
            return [p for t in self._targets.values() for p in t.read(name, now)]
