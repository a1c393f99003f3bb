"""Which local processes hold a holder's connections: one process or many (pure).

"One process holds 50" (several pools, or one oversized pool, in one process) and "ten processes
hold 5 each" (instances multiply) need different fixes; the counts are measured through /proc,
the driver is named only where the process shows it, and the finding says how sure it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from ..aggregate.attribution import Attribution
from ..aggregate.processes import HolderProcesses, ProcessShare
from ..collect.process_info import Driver
from ..config import Thresholds
from .findings import Finding, Severity

COMMON_POOL = 10
"""The default of node-postgres, Prisma 7 and HikariCP: the yardstick when no driver shows."""
TOP_HOLDERS = 10
TOP_PROCESSES = 10

_HOW_SEEN = {
    "loaded": "certain: its library is loaded in the process",
    "installed": "likely: installed where the process's script resolves its modules; the "
                 "process could use another client",
    "cmdline": "likely: named on its command line",
}


def _pool(share: ProcessShare) -> int:
    driver = share.process.driver
    return driver.pool_default if driver and driver.pool_default else COMMON_POOL


def _states(share: ProcessShare) -> str:
    return ", ".join(f"{n} {state}" for state, n in share.states)


def _driver_words(driver: Driver | None) -> str:
    if driver is None:
        return "driver not visible"
    return f"driver {driver.name} ({_HOW_SEEN.get(driver.evidence, driver.evidence)})"


def _process_line(share: ProcessShare) -> str:
    p = share.process
    return (f"pid {p.pid} {p.comm} ({p.cmdline or p.exe or '?'}): {share.count} connections "
            f"({_states(share)}); {_driver_words(p.driver)}")


def _implication(share: ProcessShare) -> str:
    driver, n = share.process.driver, share.count
    if driver is not None and driver.pool_default:
        return (f"{driver.pool_words}: {n} connections in one process means at least "
                f"{math.ceil(n / driver.pool_default)} pools or a raised maximum")
    if driver is not None:
        return (f"{driver.pool_words}: {n} connections in one process are {n} open "
                f"connections the application keeps (its own pool or connect() calls)")
    return (f"the common default pool is {COMMON_POOL} (node-postgres, Prisma 7, HikariCP): "
            f"{n} connections in one process would mean at least "
            f"{math.ceil(n / COMMON_POOL)} such pools or a raised maximum")


def _certainty(shares: tuple[ProcessShare, ...]) -> str:
    return ("How sure: the per-process counts are measured (the kernel's socket owners at "
            "this poll). Pool settings are not visible from outside a process: a raised "
            "maximum explains the same count as several pools."
            + ("" if all(s.process.driver for s in shares)
               else " Where no driver shows, the pool size is the common default, a guess."))


def holder_finding(h: HolderProcesses) -> Finding:
    """One holder's processes: many pools in one process, many processes, or one pool."""
    label = f"{h.application_name} from {h.client_addr}"
    shares = h.shares
    over = [s for s in shares if s.count > _pool(s)]
    evidence = [_process_line(s) for s in shares[:TOP_PROCESSES]]
    if len(shares) > TOP_PROCESSES:
        rest = shares[TOP_PROCESSES:]
        evidence.append(f"… and {len(rest)} more processes with "
                        f"{sum(s.count for s in rest)} connections")
    if h.unresolved:
        evidence.append(f"{h.unresolved} of its connections were not matched to a process")
    if over:
        top = over[0]
        code, severity = "process_many_pools", Severity.WARNING
        title = (f"One process holds {top.count} of {label}'s {h.total} connections: "
                 f"pid {top.process.pid} ({top.process.comm})" if len(over) == 1 else
                 f"{len(over)} processes each hold more than one pool's worth of {label}'s "
                 f"{h.total} connections")
        evidence += [_implication(s) for s in over[:TOP_PROCESSES]]
        advice = ("Create one client (pg.Pool, PrismaClient, SQLAlchemy engine, HikariDataSource)"
                  " per process and share it: a client created per module, per request or per "
                  "hot reload multiplies the pool inside one process. If one pool was sized "
                  "this large on purpose, size it to what the database can serve.")
    elif len(shares) >= 2:
        low, high = min(s.count for s in shares), max(s.count for s in shares)
        code, severity = "processes_multiply", Severity.INFO
        each = f"{low}" if low == high else f"{low} to {high}"
        title = (f"{len(shares)} processes hold {label}'s {h.total} connections, {each} each: "
                 "instances multiply")
        evidence.append(f"each process stays within one pool's worth ({_pool(shares[0])}); "
                        "the total grows with the number of processes")
        advice = ("Pool size times instances must stay below the usable slots: lower each "
                  "instance's pool maximum, cap the number of instances, or put PgBouncer "
                  "between the instances and the server.")
    else:
        code, severity = "single_process", Severity.INFO
        title = (f"One process holds all {h.total - h.unresolved} attributed connections of "
                 f"{label}: pid {shares[0].process.pid} ({shares[0].process.comm}), within "
                 "one pool's worth")
        advice = "Nothing multiplies here: this process's pool size is its share of the slots."
    evidence.append(_certainty(shares))
    return Finding(code, severity, title, tuple(evidence), advice, {
        "application_name": h.application_name, "client_addr": h.client_addr,
        "total": h.total, "unresolved": h.unresolved,
        "processes": [{"pid": s.process.pid, "command": s.process.comm,
                       "cmdline": s.process.cmdline, "connections": s.count,
                       "states": dict(s.states),
                       "driver": s.process.driver.name if s.process.driver else None,
                       "driver_evidence": (s.process.driver.evidence
                                           if s.process.driver else None)}
                      for s in shares]})


def client_processes(a: Attribution, t: Thresholds) -> Iterator[Finding]:
    """Per holder with connections from this host, the processes holding them."""
    if a.processes is None:
        return
    for h in a.processes.holders[:TOP_HOLDERS]:
        if h.shares:
            yield holder_finding(h)
    if a.processes.unresolved and a.processes.unreadable:
        yield Finding(
            "client_processes_unreadable", Severity.INFO,
            f"{a.processes.unresolved} connections from this host not matched to a process",
            (f"the agent may not read the open files of {a.processes.unreadable} processes",),
            "Run the agent as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (see the "
            "application-host systemd unit and the Helm sidecar example), to name them.",
            {"unresolved": a.processes.unresolved, "unreadable": a.processes.unreadable})
