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
DATABASE = ("target", "database")
"""A PgBouncer database (SHOW STATS' rows) in PromQL ``by`` lists."""
DATABASE_LEGEND = "{{target}} {{database}}"


def per_second(metric: c.MetricSpec) -> str:
    return f"sum by ({', '.join(DATABASE)}) (rate({sel(metric)}[$__rate_interval]))"


def per(time: c.MetricSpec, *counts: c.MetricSpec, less: c.MetricSpec | None = None) -> str:
    """``time``'s rate (``less`` the rate of another time, at least 0) over the first of
    ``counts`` a PgBouncer exports: the average time of one of them over the interval."""
    spent = (f"clamp_min({per_second(time)} - {per_second(less)}, 0)" if less
             else per_second(time))
    return " or ".join(f"({spent} / {per_second(count)})" for count in counts)


def pgbouncer_pools() -> gd.Dashboard:
    return dashboard(
        "PgBouncer pools (pgconn-agent)", PGBOUNCER_UID,
        "PgBouncer targets (a DSN with dbname=pgbouncer): clients queueing for a pool at its "
        "size, the longest wait, pool saturation and limits, and the client applications and "
        "hosts behind the pooler.",
        label_variable("application_name", "Application",
                       "application_name of PgBouncer's clients; '(unset)' when the client "
                       "sends none.", sel(c.POOLER_CLIENT_COUNT)),
        [_pools(), _traffic(), _clients()])


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


def _traffic() -> Row:
    return Row("Throughput and time per database", [
        series(
            "PgBouncer transactions and queries per second",
            "Transactions and queries PgBouncer passed to the server per second, per "
            "database (SHOW STATS). Flat at its highest while clients wait: the pool serves "
            "all it can; see the time panels for why.",
            query(per_second(c.POOLER_TRANSACTIONS), DATABASE_LEGEND + " transactions",
                  ref="A"),
            query(per_second(c.POOLER_QUERIES), DATABASE_LEGEND + " queries", ref="B"),
            unit="ops", w=6)
        .links(runbook(Alert.POOL_WAITS)),
        series(
            "PgBouncer average wait per client",
            "Time a client waited for a server connection, on average per server assignment "
            "(PgBouncer 1.23+), else per transaction (one assignment each in transaction "
            "mode). A wait is counted when it ends: the longest wait panel shows waits still "
            "under way. " + t.POOL_WAIT.said() + ".",
            query(per(c.POOLER_WAIT_TIME, c.POOLER_SERVER_ASSIGNMENTS, c.POOLER_TRANSACTIONS),
                  DATABASE_LEGEND),
            unit="s", w=6, thresholds=t.POOL_WAIT.steps())
        .links(runbook(Alert.POOL_WAITS)),
        series(
            "PgBouncer average query and transaction time",
            "Average time of a query and of a transaction on a server connection, per "
            "database (PgBouncer counts them from the client's request: the wait for a server "
            "is taken out). Clients waiting while query time rises: the server is slow, a "
            "bigger pool will not help. A transaction much longer than its queries (queries "
            "per transaction: the first panel) means server connections held idle between "
            "queries. Both flat while clients wait: the pool is too small for the load.",
            query(per(c.POOLER_QUERY_TIME, c.POOLER_QUERIES, less=c.POOLER_WAIT_TIME),
                  DATABASE_LEGEND + " query", ref="A"),
            query(per(c.POOLER_TRANSACTION_TIME, c.POOLER_TRANSACTIONS, less=c.POOLER_WAIT_TIME),
                  DATABASE_LEGEND + " transaction", ref="B"),
            unit="s", w=6)
        .links(runbook(Alert.POOL_WAITS)),
        series(
            "PgBouncer bytes per second",
            "Bytes PgBouncer received from and sent to its clients per second, per database: "
            "large results or parameters that keep server connections busy.",
            query(per_second(c.POOLER_RECEIVED), DATABASE_LEGEND + " received", ref="A"),
            query(per_second(c.POOLER_SENT), DATABASE_LEGEND + " sent", ref="B"),
            unit="Bps", w=6),
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
