"""``[thresholds] long_transaction``: transactions open long while their sessions work are
reported (the key used to be accepted and change nothing)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psycopg
from snapshots import group, snapshot

from agent import config, spec
from agent.aggregate.attribution import attribute
from agent.config import Thresholds
from agent.demo.server import LocalServer
from agent.demo.workload import Workload
from agent.diagnose.findings import Finding, Severity, diagnose
from agent.diagnose.run import diagnose_all


def long_ones(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.code == "long_transaction"]


def test_an_active_transaction_past_the_threshold_is_named_oldest_first() -> None:
    snap = snapshot([group("batch", "active", 1, xact_age=900.0, state_age=10.0),
                     group("report", "active", 2, addr="10.0.0.7", xact_age=400.0),
                     group("shop-web", "active", 5, xact_age=2.0)])
    (found,) = long_ones(diagnose(attribute(snap)))
    assert found.severity is Severity.WARNING
    assert found.data["longest_seconds"] == 900.0
    assert [h["application_name"] for h in found.data["holders"]] == ["batch", "report"]
    assert found.evidence[0].startswith("datname shop, usename shop_app, application_name batch")
    assert "transaction open 15m" in found.evidence[0]


def test_idle_in_transaction_is_left_to_its_own_finding() -> None:
    snap = snapshot([group("shop-web", "idle in transaction", 1, state_age=900.0,
                           xact_age=900.0)])
    assert not long_ones(diagnose(attribute(snap)))  # idle_in_transaction reads its sessions


def test_the_threshold_decides() -> None:
    snap = snapshot([group("batch", "active", 1, xact_age=400.0)])
    assert long_ones(diagnose(attribute(snap), Thresholds()))
    assert not long_ones(diagnose(attribute(snap), Thresholds({spec.LONG_TRANSACTION: 401.0})))


def _busy_transaction(dsn: str, started: threading.Event, pid: list[int]) -> None:
    """A transaction that works (pg_sleep) until the test cancels it."""
    with psycopg.connect(dsn, application_name="nightly-batch") as conn:
        pid.append(conn.info.backend_pid)
        conn.execute("SELECT 1")  # BEGIN (psycopg opens the transaction)
        started.set()
        with contextlib.suppress(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(60)")
        conn.rollback()


def _codes(pg: LocalServer, **thresholds: Any) -> dict[str, dict[str, Any]]:
    cfg = config.parse({"thresholds": thresholds, "targets": [{"dsn": pg.dsn()}]}, "test")
    (report,) = diagnose_all(cfg)
    return {f.code: f.data for f in report.findings}


def test_a_real_long_transaction_is_reported_from_the_config_key(
        pg: LocalServer, workload: Workload) -> None:
    workload.idle_in_transaction(1, "forgetful")
    started, pid = threading.Event(), list[int]()
    worker = threading.Thread(target=_busy_transaction, args=(pg.dsn(), started, pid))
    worker.start()
    try:
        assert started.wait(10)
        time.sleep(1.5)
        found = _codes(pg, long_transaction=1)
        assert "long_transaction" not in _codes(pg)  # the 300 s default: quiet
    finally:
        if pid:
            pg.execute(f"SELECT pg_cancel_backend({pid[0]})")
        worker.join(30)
    apps = [h["application_name"] for h in found["long_transaction"]["holders"]]
    assert apps == ["nightly-batch"]  # not the session idle in transaction
    assert found["long_transaction"]["longest_seconds"] >= 1.0
