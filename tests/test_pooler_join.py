"""The pure PgBouncer steps on hand-built snapshots: the join, relabelling, and the findings
that need the server behind the pooler (pool sizes over the slots, direct clients)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from pooler_snapshots import client, pooler, server
from snapshots import NOW, group, session, snapshot

from agent.aggregate.attribution import attribute
from agent.aggregate.join import address, pair, relabel
from agent.collect.pgbouncer.rows import timestamp
from agent.config import Thresholds
from agent.diagnose.pooler import joined_findings, pooler_findings

AT = ("unix:/run/pg", 5433)


def test_address_normalises_sockets_and_localhost() -> None:
    assert address(None, None) == ("unix:/var/run/postgresql", 5432)
    assert address("/run/pg/", "5433") == AT
    assert address("localhost", 6432) == ("127.0.0.1", 6432)
    assert address("db.example,db2", 5432) == ("db.example", 5432)


def test_connect_time_is_read_only_in_utc() -> None:
    assert timestamp("2026-11-25 12:00:00 UTC") == NOW
    assert timestamp("2026-11-25 12:00:00 CET") is None
    assert timestamp(None) is None


def test_a_link_needs_the_same_start_or_the_same_address() -> None:
    srv = snapshot([group()], sessions=(session(101, app="pgbouncer-app", addr="local"),))
    p = pooler((server("0xs1", 101, link="0xc1"),), (client("0xc1", "billing", "10.1.2.3",
                                                            link="0xs1"),))
    # The backend started a second after PgBouncer connected: linked by pid and time alone.
    [paired] = [pair(srv, None, p)]
    assert paired is not None and [link.client.ptr for link in paired.links
                                   if link.client] == ["0xc1"]
    # A pid that happens to match a backend of another server (started much later) is not.
    late = replace(p, parts={**p.parts,
                             "servers": (server("0xs1", 101, link="0xc1", started=-3600),)})
    assert pair(srv, None, late) is None
    assert pair(srv, ("10.0.0.9", 5432), late) is None
    # ...unless the pooled database points at this server's address.
    by_address = pair(srv, AT, late)
    assert by_address is not None and by_address.databases == ("shop",)


def test_relabel_names_the_client_holding_the_backend() -> None:
    srv = snapshot([group()], sessions=(
        session(101, app="stale-name", addr="local", state="idle in transaction"),
        session(102, app="direct", addr="10.9.9.9", blocking=(101,))))
    p = pooler((server("0xs1", 101, link="0xc1"),),
               (client("0xc1", "billing", "10.1.2.3", link="0xs1"),))
    paired = pair(srv, AT, p)
    assert paired is not None
    named = {s.pid: (s.application_name, s.client_addr)
             for s in relabel(srv, (paired,)).sessions}
    assert named == {101: ("billing", "10.1.2.3"), 102: ("direct", "10.9.9.9")}
    assert relabel(srv, ()) is srv


def test_a_transaction_mode_link_older_than_the_transaction_is_not_used() -> None:
    """PgBouncer read 10 s before the server's transaction began: in transaction mode the
    connection may have changed hands since; in session mode it has not."""
    srv = snapshot([group()], sessions=(session(101, app="x", addr="local"),))
    p = pooler((server("0xs1", 101, link="0xc1"),),
               (client("0xc1", "billing", "10.1.2.3", link="0xs1"),))
    earlier = replace(p, taken_at=NOW - timedelta(seconds=10))
    for snap, mode, linked in ((p, "transaction", True), (earlier, "transaction", False),
                               (replace(earlier, parts={**earlier.parts, "pools": tuple(
                                   replace(q, pool_mode="session") for q in earlier.pools)}),
                                "session", True)):
        paired = pair(srv, AT, snap)
        assert paired is not None
        assert [link.pid for link in paired.links] == ([101] if linked else []), mode


def test_pool_sizes_over_the_usable_slots_and_direct_clients() -> None:
    # 100 max_connections, 3 reserved: 97 usable; 90 in use, 60 of them from PgBouncer.
    srv = snapshot([group("pgbouncer-app", count=60, addr="local"),
                    group("cron", count=30, addr="10.7.7.7")],
                   sessions=(session(101, app="pgbouncer-app", addr="local"),))
    servers = tuple(server(f"0xs{i}", 101 if i == 0 else 5000 + i) for i in range(60))
    p = pooler(servers, (), pool_size=20, pools=5)
    paired = pair(srv, AT, p)
    assert paired is not None
    assert (paired.server_connections, paired.pool_capacity, paired.pools) == (60, 125, 5)
    a = attribute(relabel(srv, (paired,)))
    found = {f.code: f for f in joined_findings(a, (paired,), Thresholds())}
    assert set(found) == {"pgbouncer_pools_exceed_slots", "pgbouncer_server_filled_with_direct"}
    assert found["pgbouncer_pools_exceed_slots"].data == {
        "pooler": "pgb", "pool_capacity": 125, "pools": 5, "usable": 97}
    assert found["pgbouncer_server_filled_with_direct"].data == {
        "pooler": "pgb", "from_pooler": 60, "direct": 30, "usable": 97}
    # Pools that fit, on a server with room: quiet.
    small = pair(snapshot([group("pgbouncer-app", count=10, addr="local")],
                          sessions=srv.sessions), AT, pooler(servers[:10], (), pool_size=10))
    assert small is not None
    assert joined_findings(attribute(snapshot([group(count=10)])), (small,), Thresholds()) == []


def test_client_limit_near() -> None:
    clients = tuple(client(f"0xc{i}", "web" if i % 3 else "api", "10.1.1.1") for i in range(90))
    [f] = pooler_findings(pooler((), clients, max_client_conn=100))
    assert (f.code, str(f.severity), f.data["clients"]) == ("pgbouncer_client_limit",
                                                             "warning", 90)
    assert "web (60)" in f.evidence[0] and "api (30)" in f.evidence[0]
    [f] = pooler_findings(pooler((), clients, max_client_conn=94))
    assert str(f.severity) == "critical"
    assert pooler_findings(pooler((), clients, max_client_conn=200)) == []
