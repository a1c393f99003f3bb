"""Findings from an Attribution: what is wrong, the evidence, and what to do (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .. import spec
from ..aggregate.attribution import IDLE_IN_TRANSACTION, Attribution
from ..aggregate.history import History
from ..config import Thresholds
from ..contract import UNSET_APPLICATION
from ..spec import PollError, State


class Severity(IntEnum):
    OK = 0
    INFO = 1
    WARNING = 2
    CRITICAL = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    title: str
    evidence: tuple[str, ...]
    recommendation: str
    data: dict[str, Any] = field(default_factory=dict)


def age(seconds: float | None) -> str:
    """A duration the way a person says it: 45s, 12m, 3h05m."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass(slots=True)
class Holder:
    """Client backends of one holder (application, host, user, database) by state."""

    application_name: str
    client_addr: str
    usename: str
    datname: str
    states: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    oldest_idle: float | None = None
    young: int = 0

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def idle_in_transaction(self) -> int:
        return sum(self.states.get(s, 0) for s in IDLE_IN_TRANSACTION)

    def label(self) -> str:
        return f"{self.application_name} from {self.client_addr}"


def holders(a: Attribution, dims: tuple[str, ...] = ("application_name", "client_addr",
                                                       "usename", "datname")) -> list[Holder]:
    """Groups summed over the given dimensions, largest first."""
    acc: dict[tuple[str, ...], Holder] = {}
    for g in a.groups:
        values = tuple(a.value(g.key, d) or "" for d in ("application_name", "client_addr",
                                                          "usename", "datname"))
        key = tuple(v if d in dims else "" for v, d in zip(
            values, ("application_name", "client_addr", "usename", "datname"), strict=True))
        holder = acc.setdefault(key, Holder(key[0], key[1], key[2], key[3]))
        state = a.value(g.key, "state") or "(all)"
        holder.states[state] += g.count
        holder.young += g.young
        if state == State.IDLE and g.max_state_age is not None:
            holder.oldest_idle = max(holder.oldest_idle or 0.0, g.max_state_age)
    return sorted(acc.values(), key=lambda h: (-h.total, h.application_name, h.client_addr))


def _state_words(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items(), key=lambda kv: -kv[1]))


Rule = Callable[[Attribution, Thresholds], Iterator[Finding]]


def slots(a: Attribution, t: Thresholds) -> Iterator[Finding]:
    u, usable = a.utilization, a.usable
    if u is None or usable is None:
        return
    if u < t[spec.UTILIZATION_WARNING]:
        return
    severity = Severity.CRITICAL if u >= t[spec.UTILIZATION_CRITICAL] else Severity.WARNING
    word = "exhausted" if u >= 1 else "nearly exhausted"
    yield Finding(
        "slots_exhausted" if severity is Severity.CRITICAL else "slots_high", severity,
        f"Connection slots {word}: {a.client_backends} of {usable} usable in use ({u:.0%})",
        (f"max_connections {a.max_connections}, {a.reserved} reserved for superusers",
         f"by state: {_state_words(a.by_state())}"),
        "Find the holder below before touching max_connections: each slot costs server "
        "memory, and a leaking or multiplied client pool fills any limit.",
        {"client_backends": a.client_backends, "usable": usable, "utilization": u})


def lock_chains(a: Attribution, t: Thresholds) -> Iterator[Finding]:
    for chain in a.chains:
        root = chain.root
        state = root.state if root else "unknown (not visible)"
        who = (f"{root.application_name} from {root.client_addr} ({root.usename}@{root.datname})"
               if root else "a session the agent cannot see")
        idle_root = root is not None and root.state in IDLE_IN_TRANSACTION
        waits = [lw.max_wait for lw in a.lock_waits if lw.max_wait is not None]
        longest = age(max(waits)) if waits else "unknown (no pg_locks.waitstart before 14)"
        yield Finding(
            "lock_chain_idle_root" if idle_root else "lock_chain",
            Severity.CRITICAL if idle_root else Severity.WARNING,
            f"pid {chain.root_pid} blocks {len(chain.blocked_pids)} sessions"
            + (" while idle in transaction" if idle_root else ""),
            (f"root blocker pid {chain.root_pid}: {who}, state {state}"
             + (f", transaction open {age(root.xact_age)}" if root else ""),
             f"blocked pids: {', '.join(map(str, chain.blocked_pids[:20]))}"
             + (" …" if len(chain.blocked_pids) > 20 else ""),
             f"longest lock wait {longest}"),
            ("The root blocker holds its locks while doing nothing: its application left a "
             f"transaction open. End it (SELECT pg_terminate_backend({chain.root_pid})) if it is "
             "safe, then fix the code path that leaves it open.")
            if idle_root else
            "Each blocked session holds a slot while it waits. Find why the root blocker's "
            "statement is slow; set lock_timeout in the application so waiters fail fast.",
            {"root_pid": chain.root_pid, "root_state": state,
             "root_application_name": root.application_name if root else None,
             "root_client_addr": root.client_addr if root else None,
             "blocked_pids": list(chain.blocked_pids)})


def limits(a: Attribution, t: Thresholds) -> Iterator[Finding]:
    for lim in a.limits:
        if lim.limit == 0 or lim.current >= t[spec.LIMIT_SHARE] * lim.limit:
            reached = lim.current >= lim.limit
            yield Finding(
                "connection_limit", Severity.CRITICAL if reached else Severity.WARNING,
                f"The {lim.scope} {lim.name} is at {lim.current} of its connection limit "
                f"{lim.limit}",
                (f"{lim.scope} connection limit {lim.limit}, {lim.current} connected",),
                "New connections of this " + lim.scope + " fail with 'too many connections for "
                + lim.scope + "'. Find its holder above; raise the limit only if the demand "
                "is legitimate.",
                {"scope": lim.scope, "name": lim.name, "limit": lim.limit,
                 "current": lim.current})


def risky_settings(a: Attribution, t: Thresholds) -> Iterator[Finding]:
    for name, why in (("idle_in_transaction_session_timeout",
                       "a forgotten transaction holds its slot and its locks for ever"),
                      ("statement_timeout",
                       "a runaway statement holds its slot and its locks until it ends")):
        if a.setting(name) == 0:
            yield Finding(
                f"no_{name}", Severity.INFO, f"{name} is not set", (f"{name} = 0: {why}",),
                f"Set {name} for application roles (ALTER ROLE app SET {name} = '...'), "
                f"generous enough for legitimate work.", {"setting": name})


def unnamed(a: Attribution, t: Thresholds) -> Iterator[Finding]:
    unset = [h for h in holders(a, ("application_name", "client_addr"))
             if h.application_name == UNSET_APPLICATION]
    if unset:
        total = sum(h.total for h in unset)
        yield Finding(
            "no_application_name", Severity.INFO,
            f"{total} sessions have no application_name",
            tuple(f"{h.total} from {h.client_addr}" for h in unset[:10]),
            "Set application_name in every client (libpq parameter, PGAPPNAME, or the driver's "
            "option; node-postgres sends none by default) so connections can be attributed.",
            {"count": total, "hosts": [h.client_addr for h in unset]})


def privileges(a: Attribution, t: Thresholds) -> Iterator[Finding]:
    if a.hidden:
        yield Finding(
            "insufficient_privilege", Severity.WARNING,
            f"The agent cannot see the details of {a.hidden} sessions",
            (f"{a.hidden} client sessions of other roles show no state, host or transaction",),
            "Grant the agent's role pg_monitor: GRANT pg_monitor TO <agent role>;",
            {"hidden": a.hidden})


from .processes import client_processes  # noqa: E402 (it builds Findings: import after them)

RULES: tuple[Rule, ...] = (slots, lock_chains, limits, privileges, unnamed, risky_settings,
                           client_processes)
"""Rules over one instant; the holders' findings (diagnose.holders) also read the history."""
from .transactions import long_transactions  # noqa: E402 (as above)

RULES += (long_transactions,)


def diagnose(a: Attribution, thresholds: Thresholds | None = None,
             history: History | None = None) -> list[Finding]:
    """Every finding, most severe first; a setting's advice is not repeated on its own."""
    from .holders import fold_processes, holder_findings  # they build on this module's types

    t = thresholds or Thresholds()
    found = fold_processes([*holder_findings(a, t, history),
                            *(f for rule in RULES for f in rule(a, t))])
    advised = " ".join(f.recommendation for f in found if not f.code.startswith("no_"))
    found = [f for f in found
             if not (f.code.startswith("no_") and f.data.get("setting", "-") in advised)]
    return sorted(found, key=lambda f: -f.severity)


def unreachable(target: str, kind: str, message: str) -> Finding:
    """A finding for a target the agent could not poll (server full, auth, network)."""
    advices: dict[str, str] = {
        PollError.TOO_MANY_CONNECTIONS: "The server refused even the agent: every slot is taken. "
        "Connect as a superuser (reserved slots) or via a role with reserved connections, "
        "then find the holder with pg_stat_activity.",
        PollError.AUTH: "Check the agent's role, password and pg_hba.conf entry; for a TLS "
        "error, that sslrootcert holds the CA that signed the server's certificate and that "
        "the host name in the DSN is one the certificate names.",
        PollError.CONNECT: "Check that the host resolves, the port is open and the server runs.",
        PollError.TIMEOUT: "The server is too slow to answer a catalog query: it may be "
        "overloaded.",
    }
    advice = advices.get(kind, "See the message above.")
    return Finding("target_unreachable", Severity.CRITICAL, f"Cannot poll {target}: {kind}",
                   (message,), advice, {"error": kind})
