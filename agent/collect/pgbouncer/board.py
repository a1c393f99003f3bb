"""The latest snapshot of each PgBouncer target, shared by the daemon's polls so a server's
poll can join the PgBouncers in front of it (a failed or removed PgBouncer drops out)."""

from __future__ import annotations

import threading

from .snapshot import PoolerSnapshot


class PoolerBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, PoolerSnapshot] = {}

    def put(self, snapshot: PoolerSnapshot) -> None:
        with self._lock:
            self._latest[snapshot.target] = snapshot

    def drop(self, target: str) -> None:
        with self._lock:
            self._latest.pop(target, None)

    def latest(self) -> tuple[PoolerSnapshot, ...]:
        with self._lock:
            return tuple(self._latest.values())
