"""Metric points from a PgBouncer snapshot (pure): pools, limits, and client holders capped
like the server side's groups."""

from __future__ import annotations

from collections import Counter

from .. import contract as c
from ..collect.part import discover_console
from ..collect.pgbouncer.console import PARTS
from ..collect.pgbouncer.snapshot import PoolerSnapshot
from ..spec import PoolerClientState, PoolerServerState
from .cap import Key, cap
from .points import Attributes, Points, PointSet


def holders(s: PoolerSnapshot, max_groups: int) -> tuple[dict[Key, int], int]:
    """Client connections per (application_name, client_addr, user, database, state), capped
    to ``max_groups`` keys; returns the groups and how many were folded."""
    counts: dict[Key, int] = Counter((cl.application_name, cl.addr, cl.user, cl.database,
                                      cl.state) for cl in s.clients)
    return cap(counts, max_groups, float, int.__add__)


def pooler_points(s: PoolerSnapshot, *, max_groups: int = 200) -> PointSet:
    out: Points = {}
    target = (("target", s.target),)

    def add(spec: c.MetricSpec, attrs: Attributes, value: float) -> None:
        out.setdefault(spec.name, []).append((target + attrs, float(value)))

    for p in s.pools:
        pool = (("database", p.database), ("user", p.user))
        for client, n in zip(PoolerClientState, (p.cl_active, p.cl_waiting), strict=True):
            add(c.POOLER_CLIENTS, (*pool, ("state", client)), n)
        for server, n in zip(PoolerServerState, (p.sv_active, p.sv_idle, p.sv_used, p.sv_tested,
                                                  p.sv_login), strict=True):
            add(c.POOLER_SERVERS, (*pool, ("state", server)), n)
        add(c.POOLER_WAIT_MAX, pool, p.maxwait)
        size = s.pool_size(p)
        if size is not None:
            add(c.POOLER_POOL_SIZE, (*pool, ("pool_mode", p.pool_mode)), size)
    for part in discover_console(PARTS):  # the parts whose points follow from their rows
        for spec, pairs, value in part.points(part.of(s)) if part.points else ():
            if value is not None:
                add(spec, tuple(pairs), value)
    add(c.POOLER_CLIENT_MAX, (), s.max_client_conn)
    groups, folded = holders(s, max_groups)
    for key, n in sorted(groups.items()):
        add(c.POOLER_CLIENT_COUNT, tuple(zip(c.PGBOUNCER_HOLDER, key, strict=True)), n)
    add(c.GROUPS_FOLDED, (), folded)
    return PointSet(out, [])
