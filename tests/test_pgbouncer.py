"""PgBouncer targets on a real PgBouncer in front of the real server: pools, waiting clients,
the join that names the client behind the pooler, and diagnose alone and joined."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agent_e2e import Agent, wait_until
from click.testing import CliRunner
from diagnose_support import diagnose_reports
from pooler_support import LOCK_TABLE, LocalBouncer, PooledClients, client_port
from prometheus_server import Prometheus

from agent import contract as c
from agent.aggregate.pooler import pooler_points
from agent.alert_rules import render_rules
from agent.cli import main
from agent.collect.pgbouncer import is_pgbouncer
from agent.collect.pgbouncer.board import PoolerBoard
from agent.collect.pgbouncer.console import ConsoleClient
from agent.collect.pgbouncer.snapshot import PoolerSnapshot
from agent.config import Config, Target
from agent.daemon import TargetRunner
from agent.demo.server import LocalServer
from agent.demo.workload import Workload
from agent.diagnose.pooler import pooler_findings
from agent.export.state import MetricsState
from agent.spec import PoolerClientState
from dashboards import build
from dashboards.queries import panel_queries

WAITING = 10


@pytest.fixture(scope="module")
def locked_table(pg: LocalServer) -> None:
    pg.execute(f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} (id int PRIMARY KEY, v int)",
               f"INSERT INTO {LOCK_TABLE} VALUES (1, 0) ON CONFLICT DO NOTHING")


@pytest.fixture(scope="module")
def tx_bouncer(pg: LocalServer, locked_table: None) -> Iterator[LocalBouncer]:
    with LocalBouncer(pg, pool_mode="transaction", pool_size=2, max_db_connections=10
                      ) as bouncer:
        yield bouncer


@pytest.fixture(scope="module")
def session_bouncer(pg: LocalServer, locked_table: None) -> Iterator[LocalBouncer]:
    with LocalBouncer(pg, pool_mode="session", pool_size=2) as bouncer:
        yield bouncer


def waiting(bouncer: LocalBouncer, n: int) -> PoolerSnapshot | None:
    """A poll in which ``n`` clients wait, by SHOW POOLS and by SHOW CLIENTS alike (two
    console commands: a client may change state between them)."""
    s = bouncer.poll()
    queued = sum(cl.state == PoolerClientState.WAITING for cl in s.clients)
    return s if sum(p.cl_waiting for p in s.pools) == n == queued else None


def lock_waiters(pg: LocalServer) -> int:
    return int(pg.execute("SELECT count(*) FROM pg_stat_activity "
                          "WHERE wait_event_type = 'Lock'")[0][0])


def value(points: list[tuple[Any, float]], **attrs: str) -> float:
    hits = [v for a, v in points if attrs.items() <= dict(a).items()]
    assert len(hits) == 1, (attrs, points)
    return hits[0]


def findings(report: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["code"] == code]


def test_detected_by_the_admin_database(tx_bouncer: LocalBouncer, pg: LocalServer) -> None:
    assert is_pgbouncer(tx_bouncer.console_dsn())
    assert is_pgbouncer("postgresql://monitor@db:6432/pgbouncer")
    assert not is_pgbouncer(tx_bouncer.dsn()) and not is_pgbouncer(pg.dsn())


def test_one_console_connection_serves_every_poll(tx_bouncer: LocalBouncer) -> None:
    """psycopg prepares a statement run 5 times; the console refuses prepared statements."""
    client = ConsoleClient(Target("pgb", tx_bouncer.console_dsn()))
    try:
        snapshots = [client.poll() for _ in range(8)]
    finally:
        client.close()
    assert all(s.max_client_conn == tx_bouncer.max_client_conn for s in snapshots)


@pytest.fixture
def blocked_pool(tx_bouncer: LocalBouncer, pg: LocalServer
                 ) -> Iterator[tuple[PooledClients, int]]:
    """Transaction mode, pool_size 2: billing holds a row lock idle in transaction, one web
    client is blocked on it, and 10 more web clients wait in PgBouncer for a server."""
    with PooledClients(tx_bouncer.dsn()) as clients:
        holder = clients.hold_row_lock("billing")
        clients.in_background(1, "web", f"UPDATE {LOCK_TABLE} SET v = v + 1 WHERE id = 1")
        wait_until(lambda: lock_waiters(pg) == 1, what="the web client blocked on the lock")
        clients.in_background(WAITING, "web", "SELECT 1")
        wait_until(lambda: waiting(tx_bouncer, WAITING), what=f"{WAITING} clients waiting")
        yield clients, client_port(holder)


def test_pool_at_size_with_waiting_clients_from_the_console(
        tx_bouncer: LocalBouncer, blocked_pool: tuple[PooledClients, int]) -> None:
    s = tx_bouncer.poll()
    [pool] = s.pools
    assert (pool.database, pool.user, pool.pool_mode) == ("postgres", "postgres", "transaction")
    assert (pool.cl_active, pool.cl_waiting, pool.sv_active) == (2, WAITING, 2)
    assert pool.maxwait > 0
    pts = pooler_points(s).points
    assert value(pts[c.POOLER_CLIENTS.name], state="waiting") == WAITING
    assert value(pts[c.POOLER_SERVERS.name], state="active") == 2
    assert value(pts[c.POOLER_POOL_SIZE.name], pool_mode="transaction") == 2
    assert value(pts[c.POOLER_CLIENT_MAX.name]) == tx_bouncer.max_client_conn
    assert value(pts[c.POOLER_DATABASE_MAX.name], database="postgres") == 10
    assert value(pts[c.POOLER_WAIT_MAX.name], database="postgres") == pool.maxwait
    assert value(pts[c.POOLER_CLIENT_COUNT.name], application_name="web",
                 client_addr="127.0.0.1", state="waiting") == WAITING
    assert value(pts[c.POOLER_CLIENT_COUNT.name], application_name="billing",
                 state="active") == 1
    assert value(pts[c.GROUPS_FOLDED.name]) == 0
    [f] = pooler_findings(s)
    assert f.code == "pgbouncer_pool_waiting"
    assert f.data["waiting"] == WAITING and f.data["waiting_applications"] == {"web": WAITING}
    assert f.data["pool_size"] == 2
    assert "1 billing from 127.0.0.1" in f.evidence[1]


def test_diagnose_console_alone(tx_bouncer: LocalBouncer,
                                blocked_pool: tuple[PooledClients, int]) -> None:
    code, reports = diagnose_reports(tx_bouncer.console_dsn())
    [report] = reports.values()
    assert code == 1  # warning: waiting, not yet for the pool_wait_critical threshold
    assert report["pgbouncer"]["pools"][0]["cl_waiting"] == WAITING
    [f] = findings(report, "pgbouncer_pool_waiting")
    assert f["data"]["waiting_applications"] == {"web": WAITING}
    # Polled twice: billing holds one server connection, web's blocked UPDATE the other.
    assert f["data"]["stats"]["cause"] == "no_transaction_ended"
    text = CliRunner().invoke(main, ["diagnose", "--dsn", tx_bouncer.console_dsn()]).output
    assert f"{WAITING} clients waiting" in text and "PgBouncer 1." in text


def test_diagnose_joined_names_the_client_behind_the_pooler(
        tx_bouncer: LocalBouncer, pg: LocalServer,
        blocked_pool: tuple[PooledClients, int]) -> None:
    _, holder_port = blocked_pool
    # Alone, the server sees PgBouncer (its unix socket) as the lock holder's client.
    _, alone = diagnose_reports(pg.dsn())
    [chain] = findings(next(iter(alone.values())), "lock_chain_idle_root")
    assert chain["data"]["root_client_addr"] == c.LOCAL_CLIENT
    # Joined (the server over TCP, so only pid and start time pair them), the real client.
    code, reports = diagnose_reports(tx_bouncer.console_dsn(), pg.dsn())
    server = reports[next(t for t in reports if not t.endswith("/pgbouncer"))]
    assert code == 3
    [chain] = findings(server, "lock_chain_idle_root")
    assert (chain["data"]["root_application_name"], chain["data"]["root_client_addr"]) == \
        ("billing", "127.0.0.1")
    [held] = findings(server, "pgbouncer_idle_in_transaction_held")
    assert held["severity"] == "critical"
    assert (held["data"]["application_name"], held["data"]["client_addr"],
            held["data"]["client_port"], held["data"]["blocks"]) == \
        ("billing", "127.0.0.1", holder_port, 1)
    [pairing] = server["behind_pgbouncer"]
    assert pairing["server_connections"] == 2
    assert {(link["application_name"], link["client_addr"]) for link in pairing["links"]} == \
        {("billing", "127.0.0.1"), ("web", "127.0.0.1")}


def test_daemon_joins_pooler_and_server_targets(
        tx_bouncer: LocalBouncer, pg: LocalServer,
        blocked_pool: tuple[PooledClients, int]) -> None:
    config, state, board = Config(targets=()), MetricsState(), PoolerBoard()
    pooler = TargetRunner(Target("pgb", tx_bouncer.console_dsn()), config, state, board)
    server = TargetRunner(Target("db", pg.dsn()), config, state, board)
    try:
        server.poll()
        blockers = state.observe(c.LOCK_BLOCKING.name)
        assert [dict(a)["client_addr"] for a, _ in blockers] == [c.LOCAL_CLIENT]
        pooler.poll()
        server.poll()
        blockers = state.observe(c.LOCK_BLOCKING.name)
        assert [(dict(a)["application_name"], dict(a)["client_addr"], v)
                for a, v in blockers] == [("billing", "127.0.0.1", 1.0)]
        assert value(state.observe(c.POOLER_CLIENTS.name), target="pgb",
                     state="waiting") == WAITING
        assert value(state.observe(c.AGENT_UP.name), target="pgb") == 1.0
    finally:
        pooler.close()
        server.close()
    assert board.latest() == ()


def test_agent_process_exports_the_pooler_and_the_joined_server(
        tx_bouncer: LocalBouncer, pg: LocalServer,
        blocked_pool: tuple[PooledClients, int]) -> None:
    """``pgconn-agent run`` with both targets, scraped by a real Prometheus: every PgBouncer
    metric with the contract's labels, the server's blocker named after the client behind the
    pooler, every panel of the PgBouncer dashboard showing data, and the waiting alert firing
    with the waiting application named."""
    console, pooler = tx_bouncer.console_dsn(), f"127.0.0.1:{tx_bouncer.port}/pgbouncer"
    with Agent(["--dsn", console, "--dsn", pg.dsn(), "--listen", "127.0.0.1:0",
                "--interval", "1"]).started() as agent:
        wait_until(lambda: agent.value(c.LOCK_BLOCKING.prometheus_name,
                                       application_name="billing", client_addr="127.0.0.1"),
                   what="the blocker named after the real client")
        samples = agent.samples()
        assert agent.listen
        prometheus = Prometheus([agent.listen], rules=render_rules(
            {"pgbouncer_wait_seconds": 0.5, "pgbouncer_wait_for_seconds": 1}))
        try:
            check_dashboard(prometheus, pooler)
            [alert] = wait_until(lambda: [a for a in prometheus.alerts()
                                          if a["labels"]["alertname"] == "PgBouncerClientsWaiting"
                                          and a["state"] == "firing"],
                                 60, "PgBouncerClientsWaiting to fire")
        finally:
            prometheus.stop()
        code, _ = agent.stop()
    assert code == 0
    assert (alert["labels"]["target"], alert["labels"]["database"]) == (pooler, "postgres")
    assert f"{WAITING} clients of pool postgres/postgres" in alert["annotations"]["description"]
    assert f"application_name web ({WAITING})" in alert["annotations"]["description"]
    for spec in c.PGBOUNCER_METRICS:
        labels = [lab for name, lab, _ in samples if name == spec.prometheus_name]
        if spec is c.POOLER_SERVER_ASSIGNMENTS:  # PgBouncer 1.23+: not in 1.18's SHOW STATS
            assert labels == []
            continue
        assert labels, spec.name
        assert all(set(lab) == set(spec.attribute_names()) for lab in labels), spec.name
        assert all(lab["target"] == pooler for lab in labels), spec.name
    waiting = [v for name, lab, v in samples if name == c.POOLER_CLIENTS.prometheus_name
               and lab["state"] == "waiting"]
    assert waiting == [WAITING]
    up = {lab["target"]: v for name, lab, v in samples if name == c.AGENT_UP.prometheus_name}
    assert up == {pooler: 1.0, f"127.0.0.1:{pg.port}/postgres": 1.0}


def check_dashboard(prometheus: Prometheus, pooler: str) -> None:
    """Every query of the PgBouncer dashboard returns data; the queue shows on its panel."""
    [model] = [m for name, m in build.rendered().items() if name in build.PGBOUNCER_DASHBOARDS]
    variables = {"target": pooler, "datasource": "prometheus"}
    queries = panel_queries(model, variables, rate_interval="1m", interval="1s")
    assert len(queries) >= 8
    for title, expr in queries:
        result = prometheus.until(expr, bool, timeout=30)
        if title == "PgBouncer clients waiting":
            assert [v for _, v in result] == [WAITING]
        if title == "Pool saturation":
            assert [v for _, v in result] == [1.0]


def test_session_mode_pool_with_waiting_clients_of_one_application(
        session_bouncer: LocalBouncer, pg: LocalServer) -> None:
    with PooledClients(session_bouncer.dsn()) as clients:
        holder = clients.hold_row_lock("billing")
        clients.connect("web").execute("SELECT 1")  # keeps the pool's second server
        clients.in_background(WAITING, "web", "SELECT 1")
        s = wait_until(lambda: waiting(session_bouncer, WAITING), what="clients waiting")
        [f] = pooler_findings(s)
        assert f.data["waiting_applications"] == {"web": WAITING}
        assert "pool_mode session" in f.evidence
        _, reports = diagnose_reports(session_bouncer.console_dsn(), pg.dsn(via="unix"))
        server = reports[next(t for t in reports if not t.endswith("/pgbouncer"))]
        # Session mode pins the connection by design: no transaction-mode finding, but the
        # server's own findings name the real client.
        assert findings(server, "pgbouncer_idle_in_transaction_held") == []
        [link] = [lk for lk in server["behind_pgbouncer"][0]["links"]
                  if lk["application_name"] == "billing"]
        assert (link["client_addr"], link["client_port"], link["pool_mode"]) == \
            ("127.0.0.1", client_port(holder), "session")
        [iit] = [s for s in server["idle_in_transaction"] if s["application_name"] == "billing"]
        assert iit["client_addr"] == "127.0.0.1"


def test_client_holders_are_capped_with_a_folded_count(tx_bouncer: LocalBouncer) -> None:
    with PooledClients(tx_bouncer.dsn()) as clients:
        for i in range(5):
            clients.connect(f"storm-{i}")
        pts = pooler_points(tx_bouncer.poll(), max_groups=3).points
    series = pts[c.POOLER_CLIENT_COUNT.name]
    assert len(series) == 3 and sum(v for _, v in series) == 5
    assert value(series, application_name=c.OVERFLOW_VALUE) == 3
    assert value(pts[c.GROUPS_FOLDED.name]) == 3


def test_pool_sizes_over_the_slots_and_a_server_filled_with_direct_clients(
        pg: LocalServer) -> None:
    """Two pools of 60 in front of 97 usable slots, and 75 direct clients next to them."""
    pg.execute("DO $$ BEGIN CREATE ROLE app2 LOGIN; EXCEPTION WHEN duplicate_object THEN "
               "NULL; END $$")
    with LocalBouncer(pg, pool_size=60, users=("postgres", "app2")) as bouncer, \
            PooledClients(bouncer.dsn()) as clients, \
            Workload(pg.dsn(), pg.dsn(via="unix")) as direct:
        for user in ("postgres", "app2"):
            for _ in range(3):
                clients.connect("shop", user=user).execute("BEGIN; SELECT 1")
        direct.idle(75, "cron")
        # Other direct clients: earlier tests' PgBouncers keep idle server connections.
        others = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                            "'client backend' AND pid <> pg_backend_pid() AND "
                            "application_name NOT IN ('cron', 'shop')")[0][0]
        # The server over its socket: paired by PgBouncer's [databases] host and port.
        _, reports = diagnose_reports(bouncer.console_dsn(), pg.dsn(via="unix"))
    server = reports[next(t for t in reports if not t.endswith("/pgbouncer"))]
    [exceed] = findings(server, "pgbouncer_pools_exceed_slots")
    assert (exceed["data"]["pool_capacity"], exceed["data"]["pools"],
            exceed["data"]["usable"]) == (120, 2, 97)
    [filled] = findings(server, "pgbouncer_server_filled_with_direct")
    assert (filled["data"]["from_pooler"], filled["data"]["direct"]) == (6, 75 + others)
