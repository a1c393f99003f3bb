"""PgBouncer targets: the pools' queues and saturation, and the clients behind them.

Each row is one function below, in the order the rows appear.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gd

from agent import contract as c
from agent import spec
from dashboards import thresholds as t
from dashboards.layout import Row, dashboard, label_variable
from dashboards.links import PGBOUNCER_UID, Alert, runbook
from dashboards.panels import Measure, query, series
from dashboards.promql import APPS, sel
from dashboards.thresholds import steps

POOL = ("target", "database", "user")
"""A PgBouncer pool's identity in PromQL ``by`` lists."""
POOL_BY = ", ".join(POOL)
POOL_LEGEND = "{{target}} {{database}}/{{user}}"
CLIENTS_WAITING = f'state="{spec.PoolerClientState.WAITING}"'

WAITING_CLIENTS = Measure(c.POOLER_CLIENTS, "sum", "none", (CLIENTS_WAITING,), stacked=False,
                          thresholds=steps((None, "green"), (1, "orange")),
                          runbooks=(Alert.POOL_WAITS,))
LONGEST_WAIT = Measure(c.POOLER_WAIT_MAX, "max", "s", stacked=False,
                       thresholds=t.POOL_WAIT.steps(), runbooks=(Alert.POOL_WAITS,))
SERVERS = Measure(c.POOLER_SERVERS, "sum", "none")
CLIENTS = Measure(c.POOLER_CLIENT_COUNT, "sum", "none")


def pgbouncer_pools() -> gd.Dashboard:
    return dashboard(
        "PgBouncer pools (pgconn-agent)", PGBOUNCER_UID,
        "PgBouncer targets (a DSN with dbname=pgbouncer): clients queueing for a pool at its "
        "size, the longest wait, pool saturation and limits, and the client applications and "
        "hosts behind the pooler.",
        label_variable("application_name", "Application",
                       "application_name of PgBouncer's clients; '(unset)' when the client "
                       "sends none.", sel(c.POOLER_CLIENT_COUNT)),
        [_pools(), _clients()])


def _pools() -> Row:
    return Row("Pools", [
        WAITING_CLIENTS.panel(
            "PgBouncer clients waiting",
            "Clients per pool (database/user) waiting inside PgBouncer for a server "
            "connection: the pool is at its size while the server may have slots to spare.",
            POOL, legend=POOL_LEGEND),
        LONGEST_WAIT.panel(
            "PgBouncer longest wait",
            "Longest time a client of the pool has been waiting for a server connection "
            "(maxwait). " + t.POOL_WAIT.said() + ".", POOL, legend=POOL_LEGEND),
        series(
            "Pool saturation",
            "Server connections of each pool (all states) divided by its size (pool_size + "
            "reserve_pool). At 100 % new transactions queue.",
            query(f"{SERVERS.expr(POOL)} / on ({POOL_BY}) "
                  f"max by ({POOL_BY}) ({sel(c.POOLER_POOL_SIZE)})", POOL_LEGEND),
            unit="percentunit", w=8, thresholds=t.POOL_SATURATION.steps())
        .links(runbook(Alert.POOL_WAITS)),
        SERVERS.panel(
            "Server connections by state",
            "PgBouncer's server connections by state: active (held by a client), idle, used, "
            "tested, login. These are the PostgreSQL slots the pooler takes.",
            ("target", "state"), w=8),
        series(
            "Pool sizes and database limits",
            "Each pool's size (pool_size + reserve_pool) and each database's "
            "max_db_connections (where set): pool sizes times pools must fit the server's "
            "usable slots.",
            query(f"max by ({POOL_BY}, pool_mode) ({sel(c.POOLER_POOL_SIZE)})",
                  POOL_LEGEND + " size ({{pool_mode}})", ref="A"),
            query(f"max by (target, database) ({sel(c.POOLER_DATABASE_MAX)})",
                  "{{target}} {{database}} max_db_connections", ref="B"),
            unit="none", w=8),
    ])


def _clients() -> Row:
    return Row("Clients behind the pooler", [
        CLIENTS.panel(
            "PgBouncer clients per application",
            "PgBouncer's client connections per application_name and state: who waits and "
            "who holds the pools' server connections.",
            ("target", "application_name", "state"), APPS,
            runbooks=(Alert.POOL_WAITS, Alert.POOL_CLIENT_LIMIT)),
        CLIENTS.panel(
            "PgBouncer clients per host",
            "PgBouncer's client connections per client address: the hosts PostgreSQL no "
            "longer sees behind the pooler.", ("target", "client_addr"), APPS, w=6),
        series(
            "Client connections of max_client_conn",
            "All client connections divided by max_client_conn; beyond it PgBouncer refuses "
            "new clients. " + t.UTILIZATION.said() + ".",
            query(f"sum by (target) ({sel(c.POOLER_CLIENT_COUNT)}) / on (target) "
                  f"max by (target) ({sel(c.POOLER_CLIENT_MAX)})", "{{target}}"),
            unit="percentunit", w=6, thresholds=t.UTILIZATION.steps())
        .links(runbook(Alert.POOL_CLIENT_LIMIT)),
    ])
