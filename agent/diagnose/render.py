"""Render a diagnosis for a person (text) or a script (JSON), with the same content."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..aggregate.attribution import IDLE_IN_TRANSACTION, Attribution
from ..aggregate.join import Pairing
from ..collect.pgbouncer.snapshot import PoolerSnapshot
from ..contract import HIDDEN
from . import pooler_render
from .findings import Finding, Severity, age, holders

TOP_HOLDERS = 10
_BAR = 30


@dataclass(frozen=True, slots=True)
class Report:
    """One target's diagnosis; ``attribution`` is None when the target could not be polled."""

    target: str
    attribution: Attribution | None
    findings: tuple[Finding, ...]
    queries: dict[int, str] = field(default_factory=dict)
    pooler: PoolerSnapshot | None = None
    pairings: tuple[Pairing, ...] = ()
    observed: float = 0.0
    """Seconds of history the findings read (0: one instant)."""

    @property
    def severity(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.OK)


def safe(text: object) -> str:
    """Printable text: control characters (terminal escapes, newlines) become visible escapes."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in s)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


def text(report: Report) -> str:
    a = report.attribution
    lines = [f"pgconn-agent diagnose: target {safe(report.target)}"]
    if a is not None:
        lines[0] += (f" at {a.taken_at:%Y-%m-%d %H:%M:%S %Z} "
                     f"(PostgreSQL {a.server_version_num // 10000}."
                     f"{a.server_version_num % 10000})")
        lines[0] += (f", observed {report.observed:.0f}s" if report.observed
                     else ", one instant")
        lines += ["", *_gauge(a), "", "Top holders", *_holders(a)]
    if report.pooler is not None:
        lines[0] += f" (PgBouncer {report.pooler.version})"
        lines += ["", *map(safe, pooler_render.pools_lines(report.pooler))]
    lines += [safe(line) for line in pooler_render.pairing_lines(report.pairings)]
    lines += ["", "Findings, most severe first" if report.findings else "No findings: healthy."]
    for f in report.findings:
        lines.append(f"{str(f.severity).upper():<8}  {safe(f.title)}")
        lines += [f"          - {safe(e)}" for e in f.evidence]
        lines.append(f"          => {safe(f.recommendation)}")
    if report.queries:
        lines += ["", "Queries (truncated; shown because --show-queries was given)"]
        lines += [f"  pid {pid}: {safe(q)}" for pid, q in sorted(report.queries.items())]
    return "\n".join(lines) + "\n"


def _gauge(a: Attribution) -> list[str]:
    usable, u = a.usable, a.utilization
    if usable is None or u is None:
        return [f"Slots: {a.client_backends} client backends (max_connections unknown)"]
    filled = min(_BAR, round(u * _BAR))
    states = ", ".join(f"{n} {safe(s)}" for s, n in
                       sorted(a.by_state().items(), key=lambda kv: -kv[1]))
    return [f"Slots  [{'#' * filled}{'.' * (_BAR - filled)}]  {a.client_backends} of {usable} "
            f"usable connections in use ({u:.0%})",
            f"       max_connections {a.max_connections}, {a.reserved} reserved; {states}"]


def _holders(a: Attribution) -> list[str]:
    rows = [["APPLICATION", "HOST", "USER", "DATABASE", "TOTAL", "ACTIVE", "IDLE", "IDLE-IN-TX",
             "OLDEST IDLE"]]
    for h in holders(a)[:TOP_HOLDERS]:
        # Sessions the agent may not see (no pg_monitor) have no known state: "?", never 0.
        known = HIDDEN not in h.states
        rows.append([safe(h.application_name), safe(h.client_addr), safe(h.usename),
                     safe(h.datname), str(h.total),
                     *(str(n) if known else "?" for n in (
                         h.states.get("active", 0), h.states.get("idle", 0),
                         h.idle_in_transaction)),
                     age(h.oldest_idle) if known else "?"])
    return _table(rows)


def as_dict(report: Report) -> dict[str, Any]:
    a = report.attribution
    out: dict[str, Any] = {"target": report.target, "severity": str(report.severity),
                           "observed_seconds": report.observed}
    if a is not None:
        out["taken_at"] = a.taken_at.isoformat()
        out["server_version_num"] = a.server_version_num
        out["slots"] = {"client_backends": a.client_backends, "usable": a.usable,
                        "max_connections": a.max_connections, "reserved": a.reserved,
                        "utilization": a.utilization, "by_state": a.by_state(),
                        "hidden": a.hidden}
        out["holders"] = [
            {"application_name": h.application_name, "client_addr": h.client_addr,
             "usename": h.usename, "datname": h.datname, "total": h.total,
             "states": dict(h.states), "oldest_idle_seconds": h.oldest_idle,
             "unknown_state": h.states.get(HIDDEN, 0)}
            for h in holders(a)[:TOP_HOLDERS]]
        out["idle_in_transaction"] = [
            {"pid": s.pid, "application_name": s.application_name, "client_addr": s.client_addr,
             "usename": s.usename, "datname": s.datname, "state_age_seconds": s.state_age,
             "xact_age_seconds": s.xact_age, "locks_held": s.locks_held}
            for s in a.sessions if s.state in IDLE_IN_TRANSACTION]
        out["lock_chains"] = [
            {"root_pid": c.root_pid, "root_state": c.root.state if c.root else None,
             "root_application_name": c.root.application_name if c.root else None,
             "blocked_pids": list(c.blocked_pids)} for c in a.chains]
    if report.pooler is not None:
        out["pgbouncer"] = pooler_render.pools_dict(report.pooler)
    if report.pairings:
        out["behind_pgbouncer"] = pooler_render.pairings_dict(report.pairings)
    out["findings"] = [{"code": f.code, "severity": str(f.severity), "title": f.title,
                        "evidence": list(f.evidence), "recommendation": f.recommendation,
                        "data": f.data} for f in report.findings]
    if report.queries:
        out["queries"] = {str(pid): q for pid, q in sorted(report.queries.items())}
    return out


def as_json(reports: list[Report]) -> str:
    return json.dumps({"targets": [as_dict(r) for r in reports]}, indent=2, default=str) + "\n"
