"""The PgBouncer parts of a diagnosis, for a person (text lines) or a script (dicts)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..aggregate.join import Pairing
from ..collect.pgbouncer.snapshot import PoolerSnapshot
from .findings import age


def pools_lines(s: PoolerSnapshot) -> list[str]:
    lines = [f"Clients {len(s.clients)} of max_client_conn {s.max_client_conn}", "",
             "Pools (database/user: clients active, waiting; servers active, idle; size)"]
    for p in s.pools:
        lines.append(f"  {p.database}/{p.user} [{p.pool_mode}]: clients {p.cl_active} active, "
                     f"{p.cl_waiting} waiting (longest {age(p.maxwait)}); servers "
                     f"{p.sv_active} active, {p.sv_idle} idle, {p.sv_used} used; size "
                     f"{s.pool_size(p)}")
    top = Counter((cl.application_name, cl.addr) for cl in s.clients).most_common(10)
    lines += ["", "Top clients (application from address: connections)"]
    lines += [f"  {app} from {addr}: {n}" for (app, addr), n in top]
    return lines


def pools_dict(s: PoolerSnapshot) -> dict[str, Any]:
    return {"version": s.version, "clients": len(s.clients),
            "max_client_conn": s.max_client_conn,
            "pools": [{"database": p.database, "user": p.user, "pool_mode": p.pool_mode,
                       "cl_active": p.cl_active, "cl_waiting": p.cl_waiting,
                       "sv_active": p.sv_active, "sv_idle": p.sv_idle, "sv_used": p.sv_used,
                       "maxwait_seconds": p.maxwait, "pool_size": s.pool_size(p)}
                      for p in s.pools]}


def pairing_lines(pairings: tuple[Pairing, ...]) -> list[str]:
    lines: list[str] = []
    for p in pairings:
        lines += ["", f"Behind PgBouncer {p.pooler.target}: {p.server_connections} server "
                      f"connections, pools may open {p.pool_capacity}"]
        lines += [f"  pid {link.pid} held by {link.client.application_name} from "
                  f"{link.client.addr}:{link.client.port} ({link.pool_mode} pool)"
                  for link in p.links if link.client is not None][:20]
    return lines


def pairings_dict(pairings: tuple[Pairing, ...]) -> list[dict[str, Any]]:
    return [{"pooler": p.pooler.target, "databases": list(p.databases),
             "server_connections": p.server_connections, "pool_capacity": p.pool_capacity,
             "links": [{"pid": link.pid, "pool_mode": link.pool_mode,
                        "application_name": link.client.application_name if link.client
                        else None,
                        "client_addr": link.client.addr if link.client else None,
                        "client_port": link.client.port if link.client else None}
                       for link in p.links]} for p in pairings]
