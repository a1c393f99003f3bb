"""Findings about PgBouncer (pure): pools with waiting clients (and, from two polls' SHOW STATS,
why they wait) and the client limit from the console alone; with the server behind it, idle
transactions held through a transaction-mode pool, pools that can outgrow the server, and a
server filled by the pooler plus direct clients.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from .. import spec
from ..aggregate.attribution import IDLE_IN_TRANSACTION, Attribution
from ..aggregate.join import Pairing
from ..collect.pgbouncer.snapshot import ClientConn, DatabaseStats, PoolerSnapshot
from ..config import Thresholds
from ..contract import AGENT_APPLICATION_NAME
from ..spec import PoolerClientState
from .findings import Finding, Severity, age, holders


def _apps(clients: Iterable[ClientConn], limit: int = 5) -> str:
    counts = Counter(f"{cl.application_name} from {cl.addr}" for cl in clients)
    return ", ".join(f"{n} {who}" for who, n in counts.most_common(limit)) or "none"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"


COUNTED = ("total_xact_count", "total_query_count", "total_xact_time", "total_query_time",
           "total_wait_time")
"""The SHOW STATS counters the waiting-pool finding reads."""


def _delta(earlier: DatabaseStats, now: DatabaseStats, field: str) -> float | None:
    a, b = getattr(earlier, field), getattr(now, field)
    return None if a is None or b is None else float(b - a)


def why_waiting(earlier: DatabaseStats | None, now: DatabaseStats | None, seconds: float,
                t: Thresholds) -> tuple[tuple[str, ...], dict[str, Any]]:
    """What SHOW STATS says about why a pool's clients wait, from its counters over the
    ``seconds`` between two polls: the holders keep server connections idle inside
    transactions, the server got slow (a query takes ``pool_query_slowdown`` times its time
    since PgBouncer started), or the pool is too small for the load. PgBouncer counts query and
    transaction times from the client's request, so the clients' wait is taken out of them.
    Evidence lines and data; nothing without the counters (one poll, or PgBouncer < 1.8)."""
    if earlier is None or now is None:
        return (), {}
    deltas = [_delta(earlier, now, field) for field in COUNTED]
    xacts, queries, xact_time, query_time, waited = (d or 0.0 for d in deltas)
    if None in deltas:
        return (), {}
    if not xacts:
        return ((f"SHOW STATS: no transaction of database {now.database} ended in "
                 f"{seconds:.1f}s: its server connections are held, not busy",),
                {"cause": "no_transaction_ended", "seconds": seconds})
    on_server = max(0.0, xact_time - waited)
    running = max(0.0, query_time - waited)
    per_query = running / (queries or 1.0)
    assert now.total_query_time is not None and now.total_wait_time is not None
    lifetime = now.total_query_time - now.total_wait_time
    usual = lifetime / now.total_query_count if now.total_query_count and lifetime > 0 else None
    slowdown = per_query / usual if usual else None
    idle_share = 1.0 - running / on_server if on_server else 0.0
    numbers = (f"SHOW STATS, database {now.database} (all its pools), over {seconds:.1f}s: "
               f"{xacts / seconds:.1f} transactions/s, {queries / seconds:.1f} queries/s; a "
               f"transaction waited {_duration(waited / xacts)} for a server, then held it "
               f"{_duration(on_server / xacts)}; a query ran {_duration(per_query)} on the "
               f"server ({_duration(usual) if usual is not None else '?'} since PgBouncer "
               "started)")
    # Idleness first: with queries much shorter than the wait taken out of them, their time
    # on the server is the noisier figure (measured: up to ~15 % of the wait off at 1.18).
    if idle_share >= t[spec.POOL_IDLE_IN_TRANSACTION]:
        cause, said = "idle_in_transaction", (
            f"server connections spend {idle_share:.0%} of their transactions between "
            "queries: the holders keep them idle inside transactions, a bigger pool would "
            "fill up too")
    elif slowdown is not None and slowdown >= t[spec.POOL_QUERY_SLOWDOWN]:
        cause, said = "server_slow", (
            f"queries take {slowdown:.1f}x their usual time: the server got slow, a bigger "
            "pool would not help")
    else:
        cause, said = "pool_too_small", (
            "queries take their usual time and transactions keep their connections busy: "
            "the pool is too small for the load")
    return (numbers, said), {
        "cause": cause, "seconds": seconds, "transactions": xacts, "queries": queries,
        "wait_per_transaction_seconds": waited / xacts,
        "transaction_seconds": on_server / xacts, "query_seconds": per_query,
        "usual_query_seconds": usual, "idle_in_transaction_share": max(0.0, idle_share)}


def pool_waiting(s: PoolerSnapshot, t: Thresholds, earlier: PoolerSnapshot | None = None
                 ) -> Iterator[Finding]:
    for p in s.pools:
        if not p.cl_waiting:
            continue
        size = s.pool_size(p)
        pool_clients = [cl for cl in s.clients if (cl.database, cl.user) == (p.database, p.user)]
        waiting = [cl for cl in pool_clients if cl.state == PoolerClientState.WAITING]
        holding = [cl for cl in pool_clients if cl.link]
        by_app = Counter(cl.application_name for cl in waiting)
        servers = p.sv_active + p.sv_idle + p.sv_used + p.sv_tested + p.sv_login
        stats_evidence, stats = why_waiting(
            earlier.database_stats(p.database) if earlier else None,
            s.database_stats(p.database),
            (s.taken_at - earlier.taken_at).total_seconds() if earlier else 0.0, t)
        yield Finding(
            "pgbouncer_pool_waiting",
            Severity.CRITICAL if p.maxwait >= t[spec.POOL_WAIT_CRITICAL] else Severity.WARNING,
            f"PgBouncer pool {p.database}/{p.user} is at its size ({servers} of "
            f"{size if size is not None else '?'} server connections): {p.cl_waiting} clients "
            f"waiting, longest {age(p.maxwait)}",
            (f"waiting: {_apps(waiting)}",
             f"holding the pool's {p.sv_active} active server connections: {_apps(holding)}",
             f"pool_mode {p.pool_mode}", *stats_evidence),
            "Clients queue inside PgBouncer while the server may have slots to spare. Find "
            "why the holders keep their server connections (long or idle transactions, "
            "session pool mode) before raising pool_size; raise it only within the server's "
            "usable slots.",
            {"database": p.database, "user": p.user, "waiting": p.cl_waiting,
             "longest_wait_seconds": p.maxwait, "pool_size": size,
             "waiting_applications": dict(by_app), "stats": stats})


def client_limit(s: PoolerSnapshot, t: Thresholds) -> Iterator[Finding]:
    clients = len(s.clients)
    share = clients / s.max_client_conn if s.max_client_conn else 0.0
    if share < t[spec.UTILIZATION_WARNING]:
        return
    top = Counter(cl.application_name for cl in s.clients).most_common(3)
    yield Finding(
        "pgbouncer_client_limit",
        Severity.CRITICAL if share >= t[spec.UTILIZATION_CRITICAL] else Severity.WARNING,
        f"PgBouncer has {clients} of max_client_conn {s.max_client_conn} client connections "
        f"({share:.0%})",
        (f"largest client applications: {', '.join(f'{a} ({n})' for a, n in top)}",),
        "Beyond max_client_conn PgBouncer refuses new clients ('no more connections "
        "allowed'). Find the client that multiplies its connections; raise max_client_conn "
        "only with the file-descriptor limit.",
        {"clients": clients, "max_client_conn": s.max_client_conn, "share": share})


def pooler_findings(s: PoolerSnapshot, t: Thresholds | None = None,
                    earlier: PoolerSnapshot | None = None) -> list[Finding]:
    """Findings from PgBouncer's console alone, most severe first; with an ``earlier`` poll,
    the waiting pools' SHOW STATS counters in between say why they wait."""
    t = t or Thresholds()
    found = [*pool_waiting(s, t, earlier), *client_limit(s, t)]
    return sorted(found, key=lambda f: -f.severity)


def held_idle_in_transaction(a: Attribution, p: Pairing, t: Thresholds) -> Iterator[Finding]:
    sessions = {s.pid: s for s in a.sessions}
    blocked = Counter(pid for s in a.sessions for pid in s.blocking_pids)
    held = [(link, sessions[link.pid]) for link in p.links
            if link.pool_mode == "transaction" and link.client is not None
            and sessions[link.pid].state in IDLE_IN_TRANSACTION]
    for link, s in held:
        cl = link.client
        assert cl is not None
        yield Finding(
            "pgbouncer_idle_in_transaction_held",
            Severity.CRITICAL if blocked[s.pid] else Severity.WARNING,
            f"{cl.application_name} from {cl.addr}:{cl.port} holds server connection pid "
            f"{s.pid} idle in transaction through transaction-mode PgBouncer {p.pooler.target}",
            (f"client {cl.user}@{cl.database} {cl.application_name} from {cl.addr}:{cl.port}, "
             f"connected at {cl.connect_time or '?'}",
             f"server pid {s.pid}: idle in transaction for {age(s.state_age)}, transaction "
             f"open {age(s.xact_age)}, holds {s.locks_held} locks, directly blocks "
             f"{blocked[s.pid]} sessions",
             "in transaction mode the connection is pinned to this client until it commits: "
             "the pool has one server connection less"),
            f"Fix the client's code path that leaves the transaction open; end it now with "
            f"SELECT pg_terminate_backend({s.pid}) if safe; set "
            f"idle_in_transaction_session_timeout on the server.",
            {"pid": s.pid, "application_name": cl.application_name, "client_addr": cl.addr,
             "client_port": cl.port, "pooler": p.pooler.target, "blocks": blocked[s.pid]})


def pools_exceed_slots(a: Attribution, p: Pairing, t: Thresholds) -> Iterator[Finding]:
    usable = a.usable
    if usable is None or p.pool_capacity <= usable:
        return
    yield Finding(
        "pgbouncer_pools_exceed_slots", Severity.WARNING,
        f"PgBouncer {p.pooler.target}'s {p.pools} pools may open {p.pool_capacity} server "
        f"connections, more than the {usable} usable slots of {a.target}",
        (f"pools (database, user) over databases {', '.join(p.databases)}: pool sizes "
         f"(pool_size + reserve_pool) add up to {p.pool_capacity}",
         f"max_connections {a.max_connections}, {a.reserved} reserved"),
        "Every (database, user) pair is its own pool of pool_size. Lower default_pool_size, "
        "cap a database with max_db_connections, or use fewer users, so the sum fits the "
        "server next to its direct clients.",
        {"pooler": p.pooler.target, "pool_capacity": p.pool_capacity, "pools": p.pools,
         "usable": usable})


def filled_with_direct(a: Attribution, p: Pairing, t: Thresholds) -> Iterator[Finding]:
    usable, u = a.usable, a.utilization
    own = sum(h.total for h in holders(a, ("application_name",))
              if h.application_name == AGENT_APPLICATION_NAME)
    direct = a.client_backends - p.server_connections - own
    if not usable or u is None or u < t[spec.UTILIZATION_WARNING] or direct <= 0:
        return
    yield Finding(
        "pgbouncer_server_filled_with_direct", Severity.WARNING,
        f"{a.target} is {u:.0%} full: {p.server_connections} connections from PgBouncer "
        f"{p.pooler.target} plus {direct} direct clients",
        (f"{a.client_backends} of {usable} usable slots in use",
         f"PgBouncer holds {p.server_connections}; pool capacity {p.pool_capacity}"),
        "Clients that bypass the pooler take the slots its pools need to grow into. Route "
        "them through PgBouncer or reserve room for them in the pool sizes.",
        {"pooler": p.pooler.target, "from_pooler": p.server_connections, "direct": direct,
         "usable": usable})


JOINED_RULES = (held_idle_in_transaction, pools_exceed_slots, filled_with_direct)


def joined_findings(a: Attribution, pairings: tuple[Pairing, ...],
                    t: Thresholds | None = None) -> list[Finding]:
    """Findings of a server seen together with the PgBouncers in front of it."""
    return [f for p in pairings for rule in JOINED_RULES for f in rule(a, p, t or Thresholds())]
