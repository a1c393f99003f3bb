"""Every panel query of every dashboard returns data during the incident, on a real Prometheus.

A real PostgreSQL 15 holds "100/100 with one user": application ``shop-web`` fills the server
with idle sessions, sessions idle in transaction and a lock chain, a few other applications
hold a handful. ``pgconn-agent run`` polls it every second and a real Prometheus (Debian's)
scrapes the agent's ``/metrics`` every second. Each panel query, with the dashboard variables
substituted as Grafana would, goes through ``/api/v1/query``: no error, no empty panel, and the
key panels show the incident's numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

import pytest
from agent_e2e import Agent, wait_until
from prometheus_server import Prometheus

from agent import contract as c
from agent.demo.server import LocalServer
from agent.demo.workload import Workload
from dashboards import build
from dashboards.queries import panel_queries

APP = "shop-web"
SHOP_IDLE = 70
SHOP_IDLE_IN_TX = 10
SHOP_LOCK_WAITERS = 4
SHOP_ROLE_LIMIT = 90
# shop-web: idle + idle in transaction + the lock chain's holder and waiters.
SHOP_TOTAL = SHOP_IDLE + SHOP_IDLE_IN_TX + 1 + SHOP_LOCK_WAITERS


@dataclass
class Incident:
    prometheus: Prometheus
    target: str
    root_pid: int

    def variables(self) -> dict[str, str]:
        return {"target": self.target, "application_name": APP, "datasource": "prometheus"}


@pytest.fixture(scope="module")
def incident() -> Iterator[Incident]:
    server = LocalServer(max_connections=100, superuser_reserved=3).start()
    agent: Agent | None = None
    prometheus: Prometheus | None = None
    work: Workload | None = None
    try:
        server.execute(f"CREATE ROLE shop LOGIN CONNECTION LIMIT {SHOP_ROLE_LIMIT}")
        agent = Agent(["--dsn", server.dsn(), "--interval", "1", "--listen", "127.0.0.1:0"])
        agent.started()
        wait_until(lambda: agent is not None and agent.value("pgconn_agent_up") == 1, 60,
                   "the agent's first poll")
        assert agent.listen
        prometheus = Prometheus([agent.listen])

        # The agent runs before the incident starts, so it sees every connection open.
        work = Workload(server.dsn(), server.dsn(via="unix"))
        work.idle(SHOP_IDLE, APP, user="shop")
        work.idle_in_transaction(SHOP_IDLE_IN_TX, APP, user="shop")
        root_pid, _ = work.lock_chain(APP, waiters=SHOP_LOCK_WAITERS)
        work.idle(3, "billing-worker")
        work.idle_in_transaction(2, "reporting", via="unix")
        work.idle(2, "cron", via="unix")

        prom = prometheus

        def target_name() -> str | None:
            result = prom.raw_query('pgconn_agent_up == 1')["data"]["result"]
            return str(result[0]["metric"]["target"]) if result else None

        target = wait_until(target_name, 60, "Prometheus to scrape the agent")
        yield Incident(prometheus, target, root_pid)
    finally:
        if work is not None:
            work.close()
        if agent is not None:
            agent.stop(20)
            agent.close()
        if prometheus is not None:
            prometheus.stop()
        server.stop()


def _results(prometheus: Prometheus, expr: str) -> tuple[str | None, list[dict[str, Any]]]:
    answer = prometheus.raw_query(expr)
    if answer.get("status") != "success":
        return f"{answer.get('errorType')}: {answer.get('error')}", []
    data = answer["data"]
    if data["resultType"] != "vector":
        return f"unexpected result type {data['resultType']}", []
    return None, list(data["result"])


def _all_queries(incident: Incident) -> list[tuple[str, str, str]]:
    return [(name, title, expr)
            for name, model in build.rendered().items() if name not in build.PGBOUNCER_DASHBOARDS
            for title, expr in panel_queries(model, incident.variables(), rate_interval="1m",
                                             interval="1s", range_="5m")]


def test_every_panel_query_returns_data_during_the_incident(incident: Incident) -> None:
    queries = _all_queries(incident)
    assert len(queries) >= 40
    deadline = time.monotonic() + 90
    started = time.monotonic()
    while True:
        failures = []
        for name, title, expr in queries:
            error, result = _results(incident.prometheus, expr)
            if error or not result:
                failures.append(f"{name} / {title}: {error or 'no data'}\n    {expr}")
        # Rate windows need at least two scrapes; give them a few seconds beyond that.
        if not failures and time.monotonic() - started >= 5:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{len(failures)} of {len(queries)} panel queries failed during the "
                        "incident:\n" + "\n".join(failures))
        time.sleep(1)

Values = list[tuple[dict[str, str], float]]
"""A panel query's result: each series' labels and value."""


def _values(incident: Incident, dashboard: str, title: str, ref: int = 0
            ) -> Values:
    model = build.rendered()[dashboard]
    exprs = [e for t, e in panel_queries(model, incident.variables()) if t == title]
    assert exprs, (dashboard, title)
    error, result = _results(incident.prometheus, exprs[ref])
    assert error is None, (title, error)
    return [(r["metric"], float(r["value"][1])) for r in result]


def _wait_value(incident: Incident, dashboard: str, title: str,
                expected: Callable[[Values], bool], ref: int = 0) -> Values:
    """Poll a panel query until ``expected(values)`` holds (the agent polls every second)."""
    deadline = time.monotonic() + 30
    while True:
        values = _values(incident, dashboard, title, ref)
        if expected(values):
            return values
        if time.monotonic() > deadline:
            pytest.fail(f"{dashboard} / {title}: unexpected {json.dumps(values)}")
        time.sleep(1)


def test_key_panels_show_the_incident(incident: Incident) -> None:
    overview, drill = "connections-overview.json", "application-drilldown.json"
    def only(v: Sized) -> bool:
        return len(v) == 1

    # shop-web, billing-worker 3, reporting 2, cron 2 and the agent's own session.
    clients = SHOP_TOTAL + 3 + 2 + 2 + 1
    utilization = _wait_value(incident, overview, "Usable slots in use",
                              lambda v: only(v) and v[0][1] == pytest.approx(clients / 97))
    assert utilization[0][0] == {"target": incident.target}

    _wait_value(incident, drill, "Connections held",
                lambda v: only(v) and v[0][1] == SHOP_TOTAL)
    _wait_value(incident, overview, "Client backends by application",
                lambda v: [(m["application_name"], n) for m, n in v] == [(APP, SHOP_TOTAL)])
    _wait_value(incident, overview, "Idle in transaction by application",
                lambda v: only(v) and v[0][1] == SHOP_IDLE_IN_TX + 1)
    # Direct blocking as pg_blocking_pids() reports it: the root (idle in transaction) blocks
    # the first waiter, which holds the tuple lock the other waiters queue on.
    blocks = _wait_value(incident, drill, "Sessions this application blocks",
                         lambda v: {m["state"] for m, _ in v} == {"idle in transaction",
                                                                  "active"})
    assert dict((m["state"], n) for m, n in blocks)["idle in transaction"] == 1
    _wait_value(incident, drill, "This application's lock waits",
                lambda v: sum(n for _, n in v) == SHOP_LOCK_WAITERS)

    holders = _wait_value(incident, overview, "Top holders", lambda v: len(v) >= 3)
    idle_row = [n for m, n in holders if m["usename"] == "shop" and m["state"] == "idle"]
    assert idle_row == [SHOP_IDLE]

    # A role limit is set, no database limit: that scope says "none set" (-1), not "No data".
    limits = _values(incident, overview, "Role and database connection limits", 0)
    assert sorted(((m["scope"], m["name"]), n) for m, n in limits) == [
        (("database", "none set"), float(build.NONE_SET)),
        (("role", "shop"), float(SHOP_ROLE_LIMIT))]
    _wait_value(incident, overview, "Role and database connection limits",
                lambda v: [(m["name"], n) for m, n in v if m["scope"] == "role"]
                == [("shop", SHOP_IDLE + SHOP_IDLE_IN_TX)], ref=1)

    # Roots and intermediates apart: the root (idle in transaction) holds up all four waiters;
    # the first waiter, which the others queue behind, is no root.
    roots = _wait_value(incident, overview, "Root blockers (pid)", only)
    assert roots[0][0]["pid"] == str(incident.root_pid), roots
    assert _values(incident, drill, "Root blockers (pid)") == roots
    assert (roots[0][0]["state"], roots[0][1]) == ("idle in transaction", SHOP_LOCK_WAITERS)
    _wait_value(incident, overview, "Root blockers by application",
                lambda v: [(m["application_name"], m["state"], n) for m, n in v]
                == [(APP, "idle in transaction", SHOP_LOCK_WAITERS)])

    # Nothing of the other applications leaks into shop-web's drill-down.
    hosts = _values(incident, drill, "Connections by host and state")
    assert {m["client_addr"] for m, _ in hosts} == {"127.0.0.1"}
    assert sum(n for _, n in hosts) == SHOP_TOTAL

    up = _values(incident, overview, "Agent up")
    assert up == [({"target": incident.target}, 1.0)]
    errors = _values(incident, overview, "Poll errors and skipped polls", 0)
    # 0 per error kind once the agent exports zeroed counters; "none" at 0 while it has none.
    assert errors and all(n == 0.0 for _, n in errors), errors
    assert {m["error"] for m, _ in errors} <= {"none", *c.POLL_ERROR_KINDS}
