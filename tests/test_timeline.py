"""The diagnosis over time on a real server: churn measured and attributed, a burst that is not
churn, the composite incident in at most five findings, a healthy busy server quiet, no invented
zeros without pg_monitor, and the daemon's diagnosis while the server is full.

``diagnose`` runs with its default window (5 s of fast polls); the module takes about a minute.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest
from agent_e2e import (
    AGENT,
    Agent,
    clean_env,
    ensure_database,
    wait_sessions_gone,
    wait_until,
)
from diagnose_support import diagnose_report, run_diagnose

from agent import contract as c
from agent.demo.server import LocalServer
from agent.demo.workload import Workload

SHOP = "shop"


@pytest.fixture(scope="module", autouse=True)
def shop_database(pg: LocalServer) -> None:
    ensure_database(pg, SHOP)


@pytest.fixture
def clean(pg: LocalServer) -> None:
    wait_sessions_gone(pg)


def headlines(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.startswith(("CRITICAL", "WARNING", "INFO"))]


def sessions(pg: LocalServer) -> int:
    rows = pg.execute(f"SELECT sessions FROM pg_stat_database WHERE datname = '{SHOP}'")
    return int(rows[0][0])


def test_churn_is_measured_attributed_and_exported(pg: LocalServer, workload: Workload,
                                                   clean: None) -> None:
    workload.idle(1, "api", dbname=SHOP)
    workload.churn("api", 15, dbname=SHOP)
    time.sleep(1)
    code, report = diagnose_report(pg.dsn(dbname=SHOP))
    assert code >= 1
    churn = next(f for f in report["findings"] if f["code"] == "connection_churn")
    assert (churn["data"]["application_name"], churn["data"]["datname"]) == ("api", SHOP)
    assert 10 <= churn["data"]["rate_per_second"] <= 20, churn
    assert "new connections/s in database shop" in churn["title"]

    with Agent(["--dsn", pg.dsn(dbname=SHOP), "--listen", "127.0.0.1:0",
                "--interval", "0.5"]).started() as agent:
        name = c.CONNECTION_OPEN_RATE.prometheus_name
        wait_until(lambda: agent.value(name, application_name="api"), 10, "api's open rate")
        before, start = sessions(pg), time.monotonic()
        time.sleep(10)
        server_rate = (sessions(pg) - before) / (time.monotonic() - start)
        exported = agent.value(name, application_name="api", datname=SHOP)
    assert exported is not None
    assert abs(exported - server_rate) <= 0.3 * server_rate, (exported, server_rate)


def test_a_burst_of_long_lived_connections_is_not_churn(pg: LocalServer, workload: Workload,
                                                        clean: None) -> None:
    workload.idle(70, "prisma-app", dbname=SHOP)
    time.sleep(5)
    code, out = run_diagnose("--dsn", pg.dsn())
    assert "churn" not in out.lower() and "retry" not in out.lower(), out
    heads = headlines(out)
    assert any("prisma-app keeps 70 connections idle" in h for h in heads), out
    assert code == 1


def test_the_composite_incident_reads_as_five_findings(pg: LocalServer, workload: Workload,
                                                       clean: None) -> None:
    workload.idle(80, "shop-web")
    workload.idle_in_transaction(5, "shop-web")
    root, waiters = workload.lock_chain("shop-web", 4)
    code, report = diagnose_report(pg.dsn())
    findings = report["findings"]
    assert len(findings) <= 5, [f["title"] for f in findings]
    assert sum("shop-web" in f["title"] for f in findings) == 1
    chain = next(f for f in findings if f["code"] == "lock_chain_idle_root")
    assert chain["data"]["root_pid"] == root
    assert sorted(chain["data"]["blocked_pids"]) == sorted(waiters)
    shop = next(f for f in findings if "shop-web" in f["title"])
    assert shop["code"] == "idle_hoarding" and shop["data"]["count"] == 90
    assert code == 3


def test_a_healthy_busy_server_is_quiet(pg: LocalServer, workload: Workload,
                                        clean: None) -> None:
    workload.busy(6, "shop-web")
    workload.busy(4, "billing")
    workload.busy(3, "reports", pause=0.2)
    code, report = diagnose_report(pg.dsn())
    assert {f["severity"] for f in report["findings"]} <= {"info"}, report["findings"]
    assert code == 0


def test_without_pg_monitor_nothing_is_invented_and_the_blocker_is_found(
        pg: LocalServer, workload: Workload, clean: None) -> None:
    pg.execute("DROP ROLE IF EXISTS plain", "CREATE ROLE plain LOGIN")
    workload.idle(12, "shop-web")
    root, waiters = workload.lock_chain("locker", 2)
    code, report = diagnose_report(pg.dsn(user="plain"), window=1)
    chain = next(f for f in report["findings"] if f["code"].startswith("lock_chain"))
    assert chain["data"]["root_pid"] == root
    assert sorted(chain["data"]["blocked_pids"]) == sorted(waiters)
    shop = next(h for h in report["holders"] if h["application_name"] == "shop-web")
    assert shop["unknown_state"] == 12 and "idle" not in shop["states"]
    _, out = run_diagnose("--dsn", pg.dsn(user="plain"), window=0)
    row = next(line for line in out.splitlines() if line.startswith("shop-web"))
    assert row.split()[-4:] == ["?", "?", "?", "?"], row
    assert " 0 idle" not in out and "0 of its" not in out
    # the root's state is hidden too: a plain lock chain (warning), not "idle root" (critical)
    assert chain["data"]["root_state"] == c.HIDDEN and code == 1


def test_the_daemon_answers_while_the_server_is_full(pg: LocalServer, workload: Workload,
                                                     clean: None) -> None:
    pg.execute("DROP ROLE IF EXISTS app", "CREATE ROLE app LOGIN")
    with Agent(["--dsn", pg.dsn(user="app"), "--listen", "127.0.0.1:0",
                "--interval", "0.5"]).started() as agent:
        wait_until(lambda: agent.value(c.AGENT_UP.prometheus_name) == 1, 10, "a first poll")
        workload.idle(96, "flood", user="app")  # every usable slot but the agent's
        wait_until(lambda: agent.value(c.CONNECTION_COUNT.prometheus_name,
                                       application_name="flood", state="idle") == 96,
                   15, "the flood in the daemon's view")
        refused, _ = run_diagnose("--dsn", pg.dsn(user="app"), window=0)
        assert refused == 3
        start = time.monotonic()
        with urllib.request.urlopen(f"{agent.url}/diagnose", timeout=5) as resp:
            body = resp.read().decode()
        assert time.monotonic() - start < 1.0
        assert "flood keeps 96 connections idle" in body or "flood holds 96" in body, body
        assert "SELECT" not in body  # no query text unless configured
        cli = subprocess.run([str(AGENT), "diagnose", "--agent", agent.url, "--format", "json"],
                             env=clean_env(), capture_output=True, text=True, timeout=30)
    assert cli.returncode in (1, 3), cli.stderr
    report = json.loads(cli.stdout)["targets"][0]
    assert any(f["data"].get("application_name") == "flood" for f in report["findings"])


def test_diagnose_route_formats_and_exit_status() -> None:
    from agent.diagnose.findings import unreachable
    from agent.diagnose.remote import respond
    from agent.diagnose.render import Report

    reports = [Report("db1", None, (unreachable("db1", "too_many_connections", "full"),))]
    code, body, ctype, exit_status = respond(reports, "format=json")
    assert (code, ctype, exit_status) == (200, "application/json", 3)
    assert json.loads(body)["targets"][0]["findings"][0]["code"] == "target_unreachable"
    assert respond(reports, "")[1].decode().startswith("pgconn-agent diagnose: target db1")
    bad = respond(reports, "format=xml")
    assert (bad[0], bad[3]) == (400, 2) and b"format" in bad[1]
