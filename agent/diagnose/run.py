"""Diagnosis of configured targets: observe each for a short window, attribute, find, report."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ..aggregate.attribution import Attribution, attribute
from ..aggregate.history import History
from ..collect.client import TargetClient
from ..collect.snapshot import Snapshot
from ..config import Config, Thresholds
from ..errors import TargetError
from .findings import Severity, diagnose, unreachable
from .render import Report

EXIT_CODES = {Severity.OK: 0, Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 3}
"""diagnose's exit status: 0 healthy, 1 warning, 3 critical (2 is bad input)."""
DEFAULT_WINDOW_S = 5.0
"""Long enough to measure a new-session rate and see idle connections stay idle."""
WINDOW_POLL_S = 0.25
"""Fast polls catch sessions that live a fraction of a second (each poll costs ~10 ms)."""


def report_for(config: Config, target_index: int, thresholds: Thresholds | None = None,
               window: float = DEFAULT_WINDOW_S) -> Report:
    """Poll every ``WINDOW_POLL_S`` for ``window`` seconds (0: once) and diagnose the last poll
    with the history of the window."""
    target = config.targets[target_index]
    client = TargetClient(target, show_queries=config.show_queries,
                          dimensions=config.dimensions, max_groups=config.max_groups)
    history = History(retention=window + 60.0, resolution=0.0)
    snapshot: Snapshot | None = None
    a: Attribution | None = None
    try:
        end = time.monotonic() + window
        while True:
            # What busy sessions do is read once, by the last poll: the evidence for a busy pool.
            client.statements = end - time.monotonic() <= WINDOW_POLL_S
            try:
                snapshot = client.poll()
            except TargetError as exc:
                if a is None:
                    return Report(target.name, None,
                                  (unreachable(target.name, exc.kind, str(exc)),))
                break  # keep what the window saw
            a = attribute(snapshot, dimensions=config.dimensions, max_groups=config.max_groups)
            history.add(a)
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(WINDOW_POLL_S, left))
    finally:
        client.close()
    assert snapshot is not None and a is not None
    queries = {s.pid: s.query for s in snapshot.sessions if s.query is not None}
    found = diagnose(a, thresholds or config.thresholds, history if len(history) > 1 else None)
    return Report(target.name, a, tuple(found), queries, history.seconds())


def diagnose_all(config: Config, thresholds: Thresholds | None = None,
                 window: float = DEFAULT_WINDOW_S) -> list[Report]:
    """Every target observed at the same time (one window, not one per target)."""
    n = len(config.targets)
    with ThreadPoolExecutor(max_workers=min(n, 16)) as pool:
        return list(pool.map(lambda i: report_for(config, i, thresholds, window), range(n)))


def exit_code(reports: list[Report]) -> int:
    return max((EXIT_CODES[r.severity] for r in reports), default=0)
