"""The daemon at its default 15 s interval, and ``diagnose`` in its default 5 s window, name a
holder whose sessions live milliseconds: their polls are followed by catch bursts
(``agent.collect.catch``) while the server counts short-lived sessions no poll saw. Real server,
real churning clients; about 40 s.
"""

from __future__ import annotations

import json
import time

import pytest
from agent_e2e import Agent, ensure_database, wait_sessions_gone, wait_until
from diagnose_support import diagnose_report

from agent import contract as c
from agent.demo.server import LocalServer
from agent.demo.workload import Workload

SHOP = "catch_shop"
INTERVAL_S = 15.0
"""The daemon's default interval, which the test runs with (no --interval)."""
LIFETIME_QUERY_S = 0.005
"""The churning client's one query: its sessions live ~5-10 ms, under 1/1,000 of the interval,
so a poll alone sees one about once in 100 polls at 15/s."""


@pytest.fixture(scope="module", autouse=True)
def shop_database(pg: LocalServer) -> None:
    ensure_database(pg, SHOP)


def sessions(pg: LocalServer) -> int:
    return int(pg.execute(f"SELECT sessions FROM pg_stat_database WHERE datname = '{SHOP}'")[0][0])


def test_the_daemon_attributes_churn_at_its_default_interval(pg: LocalServer,
                                                              workload: Workload) -> None:
    wait_sessions_gone(pg)
    workload.idle(5, "steady", dbname=SHOP)
    workload.churn("churner", 15, query_seconds=LIFETIME_QUERY_S, dbname=SHOP)
    rate = c.CONNECTION_OPEN_RATE.prometheus_name
    with Agent(["--dsn", pg.dsn(dbname=SHOP), "--listen", "127.0.0.1:0"]).started() as agent:
        before, start = sessions(pg), time.monotonic()
        wait_until(lambda: agent.value(rate, application_name="churner", datname=SHOP),
                   2 * INTERVAL_S + 5, "the churner's open rate within two intervals")
        server_rate = (sessions(pg) - before) / (time.monotonic() - start)
        exported = agent.value(rate, application_name="churner", datname=SHOP)
        steady = agent.value(rate, application_name="steady")
        skipped = agent.value(c.POLL_SKIPPED.prometheus_name)
        _, body = agent.get("/diagnose?format=json")
    assert exported is not None
    assert abs(exported - server_rate) <= 0.3 * server_rate, (exported, server_rate)
    assert steady is None
    assert skipped == 0  # present (every target has the series) and never counted
    findings = json.loads(body)["targets"][0]["findings"]
    churn = next(f for f in findings if f["code"] == "connection_churn")
    assert churn["data"]["application_name"] == "churner", churn


def test_bursts_never_make_a_short_interval_skip_a_poll(pg: LocalServer,
                                                         workload: Workload) -> None:
    """At 0.5 s a burst gets 50 ms (a tenth of the interval): the poll job still ends long
    before the next one is due."""
    wait_sessions_gone(pg)
    workload.churn("churner", 15, query_seconds=LIFETIME_QUERY_S, dbname=SHOP)
    rate = c.CONNECTION_OPEN_RATE.prometheus_name
    with Agent(["--dsn", pg.dsn(dbname=SHOP), "--listen", "127.0.0.1:0",
                "--interval", "0.5"]).started() as agent:
        wait_until(lambda: agent.value(rate, application_name="churner", datname=SHOP), 10,
                   "the churner's open rate")
        time.sleep(3)
        assert agent.value(c.POLL_SKIPPED.prometheus_name) == 0


def test_diagnose_attributes_churn_within_its_window(pg: LocalServer, workload: Workload) -> None:
    """Polls every 0.25 s see a 5-10 ms session about once in 30 (2-3 in the window, sometimes
    none: no holder to name); the bursts between them, bounded by the window, catch enough for a
    confident attribution of the server's count (about 7 s)."""
    wait_sessions_gone(pg)
    workload.churn("churner", 15, query_seconds=LIFETIME_QUERY_S, dbname=SHOP)
    time.sleep(1)  # the churner is up to speed
    before, start = sessions(pg), time.monotonic()
    _, report = diagnose_report(pg.dsn(dbname=SHOP), window=5)
    took = time.monotonic() - start
    server_rate = (sessions(pg) - before) / took
    assert took < 6.5, took  # the window's end bounds the bursts
    churn = next((f for f in report["findings"] if f["code"] == "connection_churn"
                  and f["data"].get("application_name") == "churner"), None)
    assert churn is not None, report["findings"]
    assert churn["data"]["caught"] >= 10, churn["data"]
    attributed = churn["data"]["rate_per_second"]
    assert abs(attributed - server_rate) <= 0.3 * server_rate, (attributed, server_rate)
