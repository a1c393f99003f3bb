"""Hand-built PgBouncer snapshots for the pure pooler steps: clients, server connections, and
a pooler of one database (``shop`` on the server at ``/run/pg``:5433)."""

from __future__ import annotations

from datetime import timedelta

from snapshots import NOW

from agent.collect.pgbouncer.snapshot import (
    ClientConn,
    Pool,
    PooledDatabase,
    PoolerSnapshot,
    ServerConn,
)


def client(ptr: str, app: str, addr: str, *, state: str = "active", link: str = "") -> ClientConn:
    return ClientConn("shop_app", "shop", state, addr, 40001, app, NOW, 0.0, ptr, link)


def server(ptr: str, pid: int, *, link: str = "", started: float = -1.0) -> ServerConn:
    return ServerConn("shop_app", "shop", "active", "unix", 5433, "x",
                      NOW + timedelta(seconds=started), ptr, link, pid)


def pooler(servers: tuple[ServerConn, ...], clients: tuple[ClientConn, ...], *,
           pool_size: int = 20, pools: int = 1, host: str = "/run/pg",
           max_client_conn: int = 1000) -> PoolerSnapshot:
    return PoolerSnapshot("pgb", NOW, "1.18.0/bouncer", max_client_conn, {
        "pools": tuple(Pool("shop", "shop_app" if i == 0 else f"user{i}", 1, 0, 1, 0, 0, 0, 0,
                            0.0, "transaction") for i in range(pools)),
        "clients": clients, "servers": servers,
        "databases": (PooledDatabase("shop", host, 5433, "shop", pool_size, 5, None, 0,
                                     len(servers)),)})
