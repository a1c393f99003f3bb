"""One finding per holder: the strongest cause as the headline, every other cause beneath it.

A holder is an application (an unnamed one: per client host). Its causes, strongest first:
churn (a measured new-session rate), a pool at its cap, transactions left idle, idle connections
hoarded, or simply most of the slots. Rates and persistence come from the History of the
observation window (``diagnose``) or of the daemon; without one, only what one instant shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .. import spec
from ..aggregate.attribution import IDLE_IN_TRANSACTION, Attribution
from ..aggregate.history import DatabaseChurn, History
from ..collect.parts.sessions import IDLE_TX_LIMIT
from ..config import Thresholds
from ..contract import AGENT_APPLICATION_NAME, HIDDEN, UNSET_APPLICATION
from ..spec import State
from .findings import Finding, Holder, Severity, age, holders

PRIORITY = ("connection_churn", "pool_saturated", "idle_in_transaction", "idle_hoarding",
            "dominant_application", "connection_burst")
"""Headline order among causes of equal severity."""
SUSTAINED = 0.5
"""Churn: new sessions counted in at least this share of the poll intervals."""
RECENT_S = 60.0
"""Rates and persistence read the last minute of a longer (the daemon's) history."""
PERSISTENCE_S = 4.0
"""A dominant holder's connections idle in every poll of the last seconds are hoarded, even
before they reach the idle_hoard_age threshold (a crowd that just opened and stays unused)."""


@dataclass(frozen=True, slots=True)
class Cause:
    code: str
    severity: Severity
    headline: str
    evidence: tuple[str, ...]
    advice: str
    data: dict[str, Any] = field(default_factory=dict)


def _states(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {s if s != HIDDEN else 'of unknown state'}"
                     for s, n in sorted(states.items(), key=lambda kv: -kv[1]))


def _holders(a: Attribution) -> list[tuple[Holder, bool]]:
    """Per application; unnamed sessions per client host. (holder, split by host)."""
    named = [(h, False) for h in holders(a, ("application_name",))
             if h.application_name not in (UNSET_APPLICATION, AGENT_APPLICATION_NAME)]
    unset = [(h, True) for h in holders(a, ("application_name", "client_addr"))
             if h.application_name == UNSET_APPLICATION]
    return named + unset


def _churning_only(churns: tuple[DatabaseChurn, ...], held: list[tuple[Holder, bool]]
                   ) -> list[tuple[Holder, bool]]:
    """Holders with caught short-lived sessions but no connection in the last poll (sessions
    that live milliseconds): churn is their only cause, and still one finding each."""
    seen = {(h.application_name, h.client_addr if by_host else "") for h, by_host in held}
    out: dict[tuple[str, str], tuple[Holder, bool]] = {}
    for hc in (hc for d in churns for hc in d.holders if hc.caught):
        by_host = hc.application_name == UNSET_APPLICATION
        key = (hc.application_name, hc.client_addr if by_host else "")
        if hc.application_name != AGENT_APPLICATION_NAME and key not in seen:
            out.setdefault(key, (Holder(hc.application_name, hc.client_addr, "", hc.datname),
                                 by_host))
    return [out[k] for k in sorted(out)]


def _mine(app: str, addr: str | None, a_app: str, a_addr: str) -> bool:
    return app == a_app and (addr is None or addr == a_addr)


@dataclass(frozen=True, slots=True)
class View:
    """What every holder's causes read, computed once per diagnosis (not once per holder)."""

    churns: tuple[DatabaseChurn, ...]
    measured: bool
    """A history of at least two polls: rates and persistence are measured."""
    idle_recent: dict[tuple[str, str], int]
    idle_persisting: dict[tuple[str, str], int]
    persisting_for: float
    hosts: dict[str, list[str]]
    blocked: dict[int, int]


def _view(a: Attribution, history: History | None) -> View:
    hosts: dict[str, list[str]] = {}
    for g in holders(a, ("application_name", "client_addr")):
        hosts.setdefault(g.application_name, []).append(g.client_addr)
    blocked: dict[int, int] = {}
    for s in a.sessions:
        for pid in s.blocking_pids:
            blocked[pid] = blocked.get(pid, 0) + 1
    if history is None or len(history) < 2:
        return View((), False, {}, {}, 0.0, hosts, blocked)
    persisting_for = min(history.seconds(), PERSISTENCE_S)
    return View(history.churn(RECENT_S), True, history.min_idle(RECENT_S),
                history.min_idle(PERSISTENCE_S) if persisting_for >= PERSISTENCE_S / 2 else {},
                persisting_for, hosts, blocked)


def _sum_for(per: dict[tuple[str, str], int], app: str, addr: str | None) -> int:
    return sum(n for (a, host), n in per.items() if a == app and (addr is None or host == addr))


def holder_findings(a: Attribution, t: Thresholds, history: History | None = None
                    ) -> Iterator[Finding]:
    v = _view(a, history)
    held = _holders(a)
    for h, by_host in held + _churning_only(v.churns, held):
        addr = h.client_addr if by_host else None
        causes = [c for c in (
            *_churn(t, h, addr, v.churns),
            _saturated(a, t, h, addr, v),
            _idle_in_transaction(a, t, h, addr, v),
            _hoarding(a, t, h, addr, v),
            _dominant(a, t, h),
        ) if c is not None]
        burst = _burst(t, h, v, churned=any(c.code == "connection_churn" for c in causes))
        if burst is not None and not causes:
            causes.append(burst)
        if not causes:
            continue
        causes.sort(key=lambda c: (-c.severity, PRIORITY.index(c.code)))
        yield _finding(a, h, addr, causes, burst if burst not in causes else None, v)
    yield from _unattributed(t, v.churns)


def busy_holder(a: Attribution, t: Thresholds) -> bool:
    """Whether some holder has every connection busy: the next poll should read what its
    sessions do (statement ages), the evidence its finding shows."""
    return any(h.total >= t[spec.IDLE_HOARD_COUNT] and HIDDEN not in h.states
               and h.states.get(State.ACTIVE, 0) + h.idle_in_transaction == h.total
               for h, _ in _holders(a))


def _name(h: Holder, addr: str | None) -> str:
    return f"{h.application_name} from {addr}" if addr is not None else h.application_name


def _finding(a: Attribution, h: Holder, addr: str | None, causes: list[Cause],
             burst: Cause | None, v: View) -> Finding:
    head = causes[0]
    usable = a.usable
    share = f" of {usable} usable slots" if usable else ""
    hosts = sorted(x for x in v.hosts.get(h.application_name, ())
                   if addr is None or x == addr)
    summary = (f"holds {h.total}{share}: {_states(h.states)}; from "
               f"{', '.join(hosts[:5])}{' …' if len(hosts) > 5 else ''}" if h.total else
               "held no connection at the last poll: its sessions close again within the poll "
               "interval")
    evidence = [summary]
    advice: list[str] = []
    for c in causes:
        if c is not head and c.code != "dominant_application":
            evidence.append(f"also {c.headline}")
        evidence += c.evidence
        # The share alone adds no advice the specific causes do not already give.
        if c.advice not in advice and (c is head or c.code != "dominant_application"):
            advice.append(c.advice)
    if burst is not None:
        evidence += burst.evidence
    idle = None if HIDDEN in h.states else h.states.get(State.IDLE, 0)
    data: dict[str, Any] = {
        "application_name": h.application_name, "client_addr": addr, "count": h.total,
        "idle": idle, "states": dict(h.states), "causes": [c.code for c in causes]}
    for c in causes:
        data.update(c.data)
    return Finding(head.code, max(c.severity for c in causes),
                   f"{_name(h, addr)} {head.headline}", tuple(evidence), " ".join(advice), data)


def _churn(t: Thresholds, h: Holder, addr: str | None,
           churns: tuple[DatabaseChurn, ...]) -> Iterator[Cause]:
    for d in churns:
        if d.rate < t[spec.CHURN_RATE] or d.sustained < SUSTAINED:
            continue
        for hc in d.holders:
            if not _mine(h.application_name, addr, hc.application_name, hc.client_addr):
                continue
            rate = hc.rate or 0.0
            yield Cause(
                "connection_churn", Severity.WARNING,
                f"opens {rate:.1f} new connections/s in database {d.datname or '(all)'} and "
                "closes them again (churn)",
                (*_rate_evidence(d), _attribution(d, hc.caught)),
                "No pooling, a pool that closes connections too eagerly, or a reconnect/retry "
                "loop: each new session costs the server a fork and an authentication. Pool "
                "and reuse connections; back off retries.",
                {"rate_per_second": round(rate, 3), "datname": d.datname,
                 "database_rate_per_second": round(d.rate, 3), "caught": hc.caught,
                 "short_lived": d.short_lived, "exact": d.exact,
                 "ended_abandoned_fatal_killed": list(d.ended) if d.ended else None})


def _rate_evidence(d: DatabaseChurn) -> tuple[str, ...]:
    db = d.datname or "all databases"
    if d.exact:
        ended = [f"{n} {what}" for n, what in zip(
            d.ended or (), ("abandoned (the client vanished)", "fatal (ended by an error)",
                            "killed (terminated)"), strict=False) if n]
        return (f"pg_stat_database.sessions of {db}: {d.opened} new sessions in "
                f"{d.seconds:.1f}s, {d.short_lived} of them closed again ({d.rate:.1f}/s, "
                f"counted in {d.sustained:.0%} of the poll intervals)"
                + (f"; ended: {', '.join(ended)}" if ended else ""),)
    return (f"{db}: {d.short_lived} short-lived sessions caught in {d.seconds:.1f}s "
            f"(at least {d.rate:.1f}/s: this server has no session counter before "
            "PostgreSQL 14)",)


def _attribution(d: DatabaseChurn, caught: int) -> str:
    if not d.exact:
        return f"{caught} of them from this holder"
    share = caught / d.caught if d.caught else 0.0
    sure = ("confident" if caught >= 3 and share == 1 else "likely" if caught >= 3
            else "tentative: few caught")
    return (f"attribution: the samples caught {d.caught} of the {d.short_lived} short-lived "
            f"sessions, {caught} of them ({share:.0%}) from this holder ({sure})")


def _unattributed(t: Thresholds, churns: tuple[DatabaseChurn, ...]) -> Iterator[Finding]:
    for d in churns:
        if d.rate >= t[spec.CHURN_RATE] and d.sustained >= SUSTAINED and not d.holders:
            yield Finding(
                "connection_churn", Severity.WARNING,
                f"Database {d.datname or '(all)'} gets {d.rate:.1f} new sessions/s that close "
                "again; their client was not caught",
                (*_rate_evidence(d), "no short-lived session was seen by the polls: they "
                 "live shorter than the poll interval"),
                "Enable log_connections for a minute to see who connects, or run diagnose "
                "with a longer --window. Pool and reuse connections; back off retries.",
                {"datname": d.datname, "database_rate_per_second": round(d.rate, 3),
                 "caught": 0, "short_lived": d.short_lived, "exact": d.exact})


def _saturated(a: Attribution, t: Thresholds, h: Holder, addr: str | None, v: View
               ) -> Cause | None:
    busy = h.states.get(State.ACTIVE, 0) + h.idle_in_transaction
    if h.total < t[spec.IDLE_HOARD_COUNT] or busy != h.total:
        return None
    if _sum_for(v.idle_recent, h.application_name, addr):
        return None  # one of its connections was idle during the window: not capped
    waits = [w for w in a.waits if w.application_name == h.application_name]
    waiting = sum(w.count for w in waits)
    active = h.states.get(State.ACTIVE, 0)
    by_event = ", ".join(f"{w.count} {w.wait_event_type}/{w.wait_event}"
                         for w in sorted(waits, key=lambda w: -w.count)[:5])
    stats = next((st for st in a.statements if st.application_name == h.application_name),
                 None)
    blocked = sum(w.count for w in waits if w.wait_event_type == "Lock")
    evidence = [f"{active} active: {waiting} waiting ({by_event or 'none'}), "
                f"{max(active - waiting, 0)} running; {blocked} blocked on a lock"]
    if stats is not None:
        evidence.append(f"statement age: oldest {age(stats.max_age)}, median "
                        f"{age(stats.median_age)} over its {stats.count} active sessions")
        evidence += [f"{top.count}x {top.query}"
                     + (f" (query_id {top.query_id})" if top.query_id else "")
                     for top in stats.top]
    return Cause(
        "pool_saturated", Severity.WARNING,
        f"has all {h.total} of its connections busy (its pool is at its cap)",
        tuple(evidence),
        "Requests queue in the application (Prisma P2028 / 'timeout exceeded when trying to "
        "connect'). Find the slow or blocked statements first; a bigger pool only moves the "
        "queue into the server.",
        {"busy": busy, "waiting": waiting, "blocked": blocked,
         "oldest_statement_seconds": stats.max_age if stats else None,
         "median_statement_seconds": stats.median_age if stats else None,
         "top_statements": [{"query": top.query, "query_id": top.query_id, "count": top.count}
                            for top in stats.top] if stats else []})


def _idle_in_transaction(a: Attribution, t: Thresholds, h: Holder, addr: str | None, v: View
                         ) -> Cause | None:
    blocked = v.blocked
    old = [s for s in a.sessions if s.state in IDLE_IN_TRANSACTION
           and _mine(h.application_name, addr, s.application_name, s.client_addr)
           and s.state_age is not None and s.state_age >= t[spec.IDLE_IN_TRANSACTION_WARNING]]
    if not old:
        return None
    worst = max(s.state_age or 0.0 for s in old)
    old.sort(key=lambda s: (-blocked.get(s.pid, 0), -s.locks_held, -(s.state_age or 0)))
    # The count comes from the holder's groups (every session); the sessions read one by one
    # are at most the oldest IDLE_TX_LIMIT of the server.
    total = max(h.idle_in_transaction, len(old))
    unread = total - len(old)
    return Cause(
        "idle_in_transaction",
        Severity.CRITICAL if worst >= t[spec.IDLE_IN_TRANSACTION_CRITICAL] else Severity.WARNING,
        f"leaves {total} transaction{'' if total == 1 else 's'} idle (longest {age(worst)})",
        tuple(f"pid {s.pid} ({s.usename}@{s.datname} from {s.client_addr}): idle in "
              f"transaction for {age(s.state_age)}, transaction open {age(s.xact_age)}, holds "
              f"{s.locks_held} locks, directly blocks {blocked.get(s.pid, 0)} sessions"
              for s in old[:5]) + ((f"… and {len(old) - 5} more",) if len(old) > 5 else ())
        + ((f"{unread} more idle in transaction: younger than "
            f"{age(t[spec.IDLE_IN_TRANSACTION_WARNING])}, or beyond the {IDLE_TX_LIMIT} oldest "
            "transactions the agent reads one by one",) if unread else ()),
        "A transaction opened and left (an await, a network call, an exception path without "
        "rollback) holds its slot and its locks: fix that code path; set "
        "idle_in_transaction_session_timeout so the server ends such sessions.",
        {"pids": [s.pid for s in old], "longest_seconds": worst})


def _hoarding(a: Attribution, t: Thresholds, h: Holder, addr: str | None, v: View
              ) -> Cause | None:
    if HIDDEN in h.states:
        return None
    idle = h.states.get(State.IDLE, 0)
    if idle < t[spec.IDLE_HOARD_COUNT]:
        return None
    dominant = bool(a.usable) and h.total >= t[spec.HOLDER_SHARE] * (a.usable or 0)
    persisted = _sum_for(v.idle_persisting, h.application_name, addr)
    observed = v.persisting_for
    old_enough = (h.oldest_idle or 0.0) >= t[spec.IDLE_HOARD_AGE]
    early = dominant and persisted >= t[spec.IDLE_HOARD_COUNT]
    if not (old_enough or early):
        return None
    evidence = [f"oldest idle {age(h.oldest_idle)}"
                + (f"; {persisted} stayed idle through the {observed:.0f}s observed"
                   if persisted else "")]
    return Cause(
        "idle_hoarding", Severity.WARNING,
        f"keeps {idle} connections idle: an oversized pool or several pool instances",
        tuple(evidence),
        "Count the pools this client creates: one ORM client per module or per request "
        "multiplies the pool size (in Prisma, share one PrismaClient). Share one client per "
        "process, size the pool to what the database can serve, set an idle timeout on the "
        "pool (idle_session_timeout on the server is the backstop), and put a pooler "
        "(PgBouncer) in front if many processes connect.",
        {"oldest_idle_seconds": h.oldest_idle, "idle_throughout": persisted})


def _dominant(a: Attribution, t: Thresholds, h: Holder) -> Cause | None:
    usable = a.usable
    if not usable or h.total < t[spec.HOLDER_SHARE] * usable:
        return None
    filling = (a.utilization or 0) >= t[spec.UTILIZATION_WARNING]
    return Cause(
        "dominant_application", Severity.WARNING if filling else Severity.INFO,
        f"holds {h.total} of {usable} usable slots",
        (),
        "Count the pools this client creates and size them to what the database can serve; "
        "put a pooler (PgBouncer) in front if many processes connect.")


def _burst(t: Thresholds, h: Holder, v: View, *, churned: bool) -> Cause | None:
    if h.young < t[spec.CHURN_YOUNG] or churned:
        return None
    if v.measured:
        line = (f"burst: {h.young} of its connections were opened in the last minute and "
                "stayed open (a pool or a service starting up), no sustained new-session "
                "rate")
    else:
        line = (f"{h.young} of its connections were opened in the last minute; one instant "
                "cannot tell a pool starting up from repeated reconnects (use --window)")
    return Cause("connection_burst", Severity.INFO,
                 f"opened {h.young} connections in the last minute", (line,),
                 "Nothing to do if the crowd settles; watch it if it grows.",
                 {"young": h.young})


PROCESS_CODES = ("process_many_pools", "processes_multiply", "single_process")
"""Findings of diagnose.processes: which local processes hold a holder's connections."""


def fold_processes(found: list[Finding]) -> list[Finding]:
    """A holder's processes are evidence of its one finding, not a second finding naming it:
    which processes hold its connections goes right under its summary line (with the advice,
    unless it is the nothing-to-do one). A process finding for a holder without a finding of
    its own stays as it is."""
    holders_at = {f.data["application_name"]: i for i, f in enumerate(found)
                  if f.data.get("causes") and f.data.get("client_addr") is None}
    out = list(found)
    drop = set()
    for i, f in enumerate(found):
        at = holders_at.get(f.data.get("application_name")) if f.code in PROCESS_CODES else None
        if at is None:
            continue
        h = out[at]
        advice = h.recommendation if f.code == "single_process" or \
            f.recommendation in h.recommendation else f"{h.recommendation} {f.recommendation}"
        out[at] = replace(h, severity=max(h.severity, f.severity),
                          evidence=(*h.evidence[:1], f.title, *f.evidence, *h.evidence[1:]),
                          recommendation=advice,
                          data={**h.data, "causes": [*h.data["causes"], f.code],
                                "processes": f.data.get("processes")})
        drop.add(i)
    return [f for i, f in enumerate(out) if i not in drop]
