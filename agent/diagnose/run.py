"""One-shot diagnosis of configured targets: poll once, attribute, find, report."""

from __future__ import annotations

from ..aggregate.attribution import attribute
from ..collect.client import TargetClient
from ..config import Config, Thresholds
from ..errors import TargetError
from .findings import Severity, diagnose, unreachable
from .render import Report

EXIT_CODES = {Severity.OK: 0, Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 3}
"""diagnose's exit status: 0 healthy, 1 warning, 3 critical (2 is bad input)."""


def report_for(config: Config, target_index: int, thresholds: Thresholds | None = None
               ) -> Report:
    target = config.targets[target_index]
    client = TargetClient(target, show_queries=config.show_queries,
                          dimensions=config.dimensions, max_groups=config.max_groups,
                          client_processes=config.client_processes)
    try:
        snapshot = client.poll()
    except TargetError as exc:
        return Report(target.name, None, (unreachable(target.name, exc.kind, str(exc)),))
    finally:
        client.close()
    a = attribute(snapshot, dimensions=config.dimensions, max_groups=config.max_groups)
    queries = {s.pid: s.query for s in snapshot.sessions if s.query is not None}
    return Report(target.name, a, tuple(diagnose(a, thresholds or config.thresholds)), queries)


def diagnose_all(config: Config, thresholds: Thresholds | None = None) -> list[Report]:
    return [report_for(config, i, thresholds) for i in range(len(config.targets))]


def exit_code(reports: list[Report]) -> int:
    return max((EXIT_CODES[r.severity] for r in reports), default=0)
