"""Diagnosis of configured targets: observe each for a short window, attribute, find, report.

PgBouncer targets are read first (once), so each server's report can name the clients that
hold its connections through a PgBouncer that is also a target.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ..aggregate.attribution import Attribution
from ..aggregate.history import History
from ..aggregate.join import Pairing
from ..collect.pgbouncer import is_pgbouncer
from ..collect.pgbouncer.console import ConsoleClient
from ..collect.pgbouncer.snapshot import PoolerSnapshot
from ..collect.snapshot import Snapshot
from ..config import Config, Target, Thresholds
from ..errors import TargetError
from ..pipeline import observe, record_poll, server_client
from .findings import Severity, diagnose, unreachable
from .pooler import joined_findings, pooler_findings
from .render import Report

EXIT_CODES = {Severity.OK: 0, Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 3}
"""diagnose's exit status: 0 healthy, 1 warning, 3 critical (2 is bad input)."""
DEFAULT_WINDOW_S = 5.0
"""Long enough to measure a new-session rate and see idle connections stay idle."""
WINDOW_POLL_S = 0.25
"""Fast polls catch sessions that live a fraction of a second (each poll costs ~10 ms); the catch
bursts that fill the time between them (when due) catch those living milliseconds."""
POOLER_STATS_S = 1.0
"""Between a waiting PgBouncer's two polls: a busy pool ends many transactions in a second."""


def pooler_report(target: Target, thresholds: Thresholds, window: float = DEFAULT_WINDOW_S
                  ) -> Report:
    """One poll; when a pool has clients waiting (and ``window`` > 0), a second one
    ``POOLER_STATS_S`` later, whose SHOW STATS counters in between say why they wait."""
    client = ConsoleClient(target)
    earlier: PoolerSnapshot | None = None
    try:
        snapshot = client.poll()
        if window > 0 and any(p.cl_waiting for p in snapshot.pools):
            time.sleep(min(window, POOLER_STATS_S))
            earlier, snapshot = snapshot, client.poll()
    except TargetError as exc:
        return Report(target.name, None, (unreachable(target.name, exc.kind, str(exc)),))
    finally:
        client.close()
    return Report(target.name, None, tuple(pooler_findings(snapshot, thresholds, earlier)),
                  pooler=snapshot)


def report_for(config: Config, target_index: int, thresholds: Thresholds | None = None,
               poolers: tuple[PoolerSnapshot, ...] = (), window: float = DEFAULT_WINDOW_S
               ) -> Report:
    """Poll every ``WINDOW_POLL_S`` for ``window`` seconds (0: once) and diagnose the last poll
    with the history of the window."""
    target = config.targets[target_index]
    t = thresholds or config.thresholds
    if is_pgbouncer(target.dsn):
        return pooler_report(target, t, window)
    client = server_client(target, config, show_queries=config.show_queries)
    history = History(retention=window + 60.0, resolution=0.0)
    snapshot: Snapshot | None = None
    a: Attribution | None = None
    pairings: tuple[Pairing, ...] = ()
    try:
        end = time.monotonic() + window
        while True:
            # What busy sessions do and which local processes hold them are read once, by the
            # last poll: evidence the findings show, not rates.
            last = end - time.monotonic() <= WINDOW_POLL_S
            client.statements = last
            client.client_processes = config.client_processes and last
            try:
                snapshot = client.poll()
            except TargetError as exc:
                if a is None:
                    return Report(target.name, None,
                                  (unreachable(target.name, exc.kind, str(exc)),))
                break  # keep what the window saw
            o = observe(snapshot, target, config, poolers)
            snapshot, pairings, a = o.snapshot, o.pairings, o.attribution
            # Until the next poll (never past the window's end), a catch burst if one is due.
            following = min(time.monotonic() + WINDOW_POLL_S, end)
            record_poll(history, a, client, config, following - time.monotonic())
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(max(0.0, min(following - time.monotonic(), left)))
    finally:
        client.close()
    assert snapshot is not None and a is not None
    queries = {s.pid: s.query for s in snapshot.sessions if s.query is not None}
    findings = sorted((*diagnose(a, t, history if len(history) > 1 else None),
                       *joined_findings(a, pairings, t)), key=lambda f: -f.severity)
    return Report(target.name, a, tuple(findings), queries, pairings=pairings,
                  observed=history.seconds())


def diagnose_all(config: Config, thresholds: Thresholds | None = None,
                 window: float = DEFAULT_WINDOW_S) -> list[Report]:
    """PgBouncer targets first, then every server observed at the same time (one window)."""
    t = thresholds or config.thresholds
    pooled = {i: pooler_report(target, t, window) for i, target in enumerate(config.targets)
              if is_pgbouncer(target.dsn)}
    poolers = tuple(r.pooler for r in pooled.values() if r.pooler is not None)
    servers = [i for i in range(len(config.targets)) if i not in pooled]
    with ThreadPoolExecutor(max_workers=max(1, min(len(servers), 16))) as pool:
        observed = dict(zip(servers, pool.map(
            lambda i: report_for(config, i, thresholds, poolers, window), servers), strict=True))
    return [pooled.get(i) or observed[i] for i in range(len(config.targets))]


def exit_code(reports: list[Report]) -> int:
    return max((EXIT_CODES[r.severity] for r in reports), default=0)
