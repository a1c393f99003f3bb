"""The latest points of every target, and the agent's own counters and poll-time histogram.

The poll path only swaps in a new dict under a lock; collection (OTLP or a scrape) reads it.
A target that fails loses its server data at once (no stale values), keeps ``up = 0``.
Nothing stale is exported as current: data published with ``fresh_for`` is dropped, and the
target reported ``up = 0``, once that long has passed without a newer poll (a backstop behind
the client's deadline). Writes name their ``owner`` (the target's runner): once a target is
removed, or replaced under the same name, a poll still in flight publishes nothing.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

from .. import contract as c
from ..aggregate.cap import cap
from ..aggregate.points import Attributes, PointSet


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


class MetricsState:
    def __init__(self, max_groups: int = 200) -> None:
        self._lock = threading.Lock()
        self._max_groups = max_groups
        self._points: dict[str, dict[str, list[tuple[Attributes, float]]]] = {}
        self._opened: dict[str, dict[Attributes, float]] = {}
        self._pending: dict[str, dict[Attributes, float]] = {}
        self._errors: dict[str, dict[str, float]] = {}
        self._skipped: dict[str, float] = {}
        self._up: dict[str, float] = {}
        self._durations: dict[str, Durations] = {}
        self._started: dict[str, int] = {}
        self._owners: dict[str, object] = {}
        self._expires: dict[str, float] = {}

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
            for target, opened in self._opened.items():
                if len(opened) > max_groups:
                    self._opened[target] = _fold_opened(opened, max_groups)

    def _known(self, target: str) -> None:
        """Start a target's agent counters at 0 for every kind, so ``increase()`` sees the
        first error or skipped poll (a series born at 1 has no increase)."""
        self._started.setdefault(target, time.time_ns())
        self._errors.setdefault(target, dict.fromkeys(c.POLL_ERROR_KINDS, 0.0))
        self._skipped.setdefault(target, 0.0)

    def publish(self, target: str, point_set: PointSet, *, owner: object | None = None,
                fresh_for: float | None = None) -> None:
        with self._lock:
            if not self._accepts(target, owner):
                return
            self._known(target)
            self._points[target] = point_set.points
            if fresh_for is not None:
                self._expires[target] = time.monotonic() + fresh_for
            opened = self._opened.setdefault(target, {})
            for attrs, delta in self._pending.pop(target, {}).items():
                opened[attrs] = opened.get(attrs, 0.0) + delta
            # A new series is first reported at 0 and gets its count one poll later, so that
            # Prometheus' increase() and rate() see the first connections too.
            pending: dict[Attributes, float] = {}
            for attrs, delta in point_set.opened:
                if attrs in opened:
                    opened[attrs] += delta
                else:
                    opened[attrs] = 0.0
                    pending[attrs] = delta
            self._pending[target] = pending
            if len(opened) > self._max_groups:
                self._opened[target] = _fold_opened(opened, self._max_groups)
            self._up[target] = 1.0

    def fail(self, target: str, kind: str, *, owner: object | None = None) -> None:
        with self._lock:
            if not self._accepts(target, owner):
                return
            self._known(target)
            self._points.pop(target, None)
            errors = self._errors[target]
            errors[kind] = errors.get(kind, 0.0) + 1
            self._up[target] = 0.0

    def skipped(self, target: str) -> None:
        with self._lock:
            if target not in self._owners:
                return
            self._known(target)
            self._skipped[target] += 1

    def record_duration(self, target: str, seconds: float, *,
                        owner: object | None = None) -> None:
        with self._lock:
            if not self._accepts(target, owner):
                return
            self._known(target)
            durations = self._durations.get(target)
            if durations is None:
                durations = self._durations[target] = Durations(self._started[target])
            durations.record(seconds)

    def remove(self, target: str) -> None:
        with self._lock:
            for table in (self._points, self._opened, self._pending, self._errors, self._skipped,
                          self._up, self._durations, self._started, self._owners,
                          self._expires):
                table.pop(target, None)

    def durations(self) -> list[tuple[Attributes, Durations]]:
        with self._lock:
            return [((("target", t),), Durations(d.start_ns, list(d.bucket_counts), d.count,
                                                 d.sum, d.min, d.max))
                    for t, d in self._durations.items()]

    def counter(self, name: str) -> list[tuple[Attributes, float, int]]:
        """A cumulative counter's points with the start time of their target's series."""
        points = self.observe(name)
        with self._lock:
            now = time.time_ns()
            return [(attrs, value, self._started.get(attrs[0][1], now))
                    for attrs, value in points]

    def observe(self, name: str) -> list[tuple[Attributes, float]]:
        """Current points of one metric across all targets."""
        with self._lock:
            stale = self._stale()
            if name == c.AGENT_UP.name:
                return [((("target", t),), 0.0 if t in stale else v)
                        for t, v in self._up.items()]
            if name == c.POLL_SKIPPED.name:
                return [((("target", t),), v) for t, v in self._skipped.items()]
            if name == c.POLL_ERRORS.name:
                return [((("target", t), ("error", k)), v)
                        for t, kinds in self._errors.items() for k, v in kinds.items()]
            if name == c.CONNECTION_OPENED.name:
                return [(attrs, v) for per in self._opened.values() for attrs, v in per.items()]
            return [p for t, per in self._points.items() if t not in stale
                    for p in per.get(name, ())]

    def _stale(self) -> set[str]:
        now = time.monotonic()
        return {t for t, expires in self._expires.items() if now > expires}


def _fold_opened(opened: dict[Attributes, float], limit: int) -> dict[Attributes, float]:
    """Keep the busiest keys of one target's opened counter; fold the rest (bounded memory)."""
    first = next(iter(opened))
    target, names = first[0], tuple(name for name, _ in first[1:])
    values = {tuple(v for _, v in attrs[1:]): n for attrs, n in opened.items()}
    capped, _ = cap(values, limit, float, float.__add__)
    return {(target, *zip(names, key, strict=True)): n for key, n in capped.items()}
