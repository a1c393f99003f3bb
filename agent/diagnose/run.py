"""One-shot diagnosis of configured targets: poll once, attribute, find, report.

PgBouncer targets are read first, so each server's report can name the clients that hold its
connections through a PgBouncer that is also a target.
"""

from __future__ import annotations

from ..aggregate.attribution import attribute
from ..aggregate.join import pairings_for, relabel
from ..collect.client import TargetClient
from ..collect.pgbouncer import is_pgbouncer
from ..collect.pgbouncer.console import ConsoleClient
from ..collect.pgbouncer.snapshot import PoolerSnapshot
from ..config import Config, Target, Thresholds
from ..errors import TargetError
from .findings import Severity, diagnose, unreachable
from .pooler import joined_findings, pooler_findings
from .render import Report

EXIT_CODES = {Severity.OK: 0, Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 3}
"""diagnose's exit status: 0 healthy, 1 warning, 3 critical (2 is bad input)."""


def pooler_report(target: Target, thresholds: Thresholds) -> Report:
    client = ConsoleClient(target)
    try:
        snapshot = client.poll()
    except TargetError as exc:
        return Report(target.name, None, (unreachable(target.name, exc.kind, str(exc)),))
    finally:
        client.close()
    return Report(target.name, None, tuple(pooler_findings(snapshot, thresholds)),
                  pooler=snapshot)


def report_for(config: Config, target_index: int, thresholds: Thresholds | None = None,
               poolers: tuple[PoolerSnapshot, ...] = ()) -> Report:
    target = config.targets[target_index]
    t = thresholds or config.thresholds
    if is_pgbouncer(target.dsn):
        return pooler_report(target, t)
    client = TargetClient(target, show_queries=config.show_queries,
                          dimensions=config.dimensions, max_groups=config.max_groups,
                          client_processes=config.client_processes)
    try:
        snapshot = client.poll()
    except TargetError as exc:
        return Report(target.name, None, (unreachable(target.name, exc.kind, str(exc)),))
    finally:
        client.close()
    pairings = pairings_for(snapshot, target.dsn, poolers)
    snapshot = relabel(snapshot, pairings)
    a = attribute(snapshot, dimensions=config.dimensions, max_groups=config.max_groups)
    queries = {s.pid: s.query for s in snapshot.sessions if s.query is not None}
    findings = sorted((*diagnose(a, t), *joined_findings(a, pairings, t)),
                      key=lambda f: -f.severity)
    return Report(target.name, a, tuple(findings), queries, pairings=pairings)


def diagnose_all(config: Config, thresholds: Thresholds | None = None) -> list[Report]:
    t = thresholds or config.thresholds
    pooled = {i: pooler_report(target, t) for i, target in enumerate(config.targets)
              if is_pgbouncer(target.dsn)}
    poolers = tuple(r.pooler for r in pooled.values() if r.pooler is not None)
    return [pooled.get(i) or report_for(config, i, thresholds, poolers)
            for i in range(len(config.targets))]


def exit_code(reports: list[Report]) -> int:
    return max((EXIT_CODES[r.severity] for r in reports), default=0)
