"""Diagnosis on a real server: each finding fires on the real situation, quiet when healthy."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_e2e import wait_sessions_gone
from diagnose_support import codes, diagnose_report, run_diagnose

from agent.collect.parts.sessions import IDLE_TX_LIMIT
from agent.demo.server import LocalServer, free_port
from agent.demo.workload import Workload

SHORT = """
[thresholds]
idle_hoard_age = 1
idle_in_transaction_warning = 1
idle_in_transaction_critical = 600
"""


INSTANT = 0.0
"""These situations hold still: diagnose one instant (``--window 0``), not a window."""


@pytest.fixture
def short_thresholds(tmp_path: Path) -> Path:
    path = tmp_path / "short.toml"
    path.write_text(SHORT)
    return path


def test_healthy_server_is_quiet(pg: LocalServer, workload: Workload) -> None:
    wait_sessions_gone(pg)
    workload.idle(3, "shop-web")
    code, report = diagnose_report(pg.dsn(), window=INSTANT)
    assert code == 0
    assert {s for s in codes(report).values()} <= {"info"}
    assert report["slots"]["client_backends"] == 4  # three clients and the agent
    assert report["slots"]["usable"] == 97


@pytest.mark.all_versions
def test_pool_full_with_one_user(pg: LocalServer, workload: Workload,
                                 short_thresholds: Path) -> None:
    wait_sessions_gone(pg)
    workload.idle(70, "shop-web")
    workload.idle_in_transaction(5, "shop-web")
    root, waiters = workload.lock_chain("shop-web", 4)
    workload.idle(3, "billing", via="unix")
    time.sleep(1.2)
    code, report = diagnose_report(pg.dsn(), short_thresholds, window=INSTANT)
    assert code == 3
    got = codes(report)
    for expected in ("idle_in_transaction", "lock_chain_idle_root", "slots_high"):
        assert expected in got, (expected, got)
    shop_finding = next(f for f in report["findings"]
                        if f["data"].get("application_name") == "shop-web")
    # (+ process_many_pools: this test's own process holds the 80 connections)
    assert shop_finding["data"]["causes"][:3] == ["idle_in_transaction", "idle_hoarding",
                                                  "dominant_application"]
    assert len(report["findings"]) <= 5
    assert got["lock_chain_idle_root"] == "critical"
    shop = report["holders"][0]
    assert (shop["application_name"], shop["client_addr"], shop["usename"]) == \
        ("shop-web", "127.0.0.1", "postgres")
    assert shop["states"] == {"idle": 70, "idle in transaction": 6, "active": 4}
    billing = next(h for h in report["holders"] if h["application_name"] == "billing")
    assert (billing["client_addr"], billing["total"]) == ("local", 3)
    assert report["slots"]["client_backends"] == 84  # 80 + 3 + the agent
    assert report["slots"]["usable"] == 97
    chain = report["lock_chains"][0]
    assert chain["root_pid"] == root and chain["root_state"] == "idle in transaction"
    assert sorted(chain["blocked_pids"]) == sorted(waiters)
    idle_tx = {s["pid"]: s for s in report["idle_in_transaction"]}
    assert root in idle_tx and len(idle_tx) == 6
    assert all(s["xact_age_seconds"] >= 1.0 for s in idle_tx.values())
    code, text = run_diagnose("--dsn", pg.dsn(), config=short_thresholds, window=INSTANT)
    assert code == 3
    assert "84 of 97 usable connections in use" in text
    assert f"pid {root} blocks 4 sessions while idle in transaction" in text
    assert "shop-web leaves 6 transactions idle" in text
    assert "holds 80 of 97 usable slots" in text


@pytest.mark.all_versions
def test_saturated_pool_and_connection_limit(pg: LocalServer, workload: Workload) -> None:
    pg.execute("DROP ROLE IF EXISTS limited", "CREATE ROLE limited LOGIN CONNECTION LIMIT 5")
    wait_sessions_gone(pg)
    workload.lock_chain("api", 11)
    workload.idle(5, "worker", user="limited")
    code, report = diagnose_report(pg.dsn(), window=INSTANT)
    got = codes(report)
    assert got["pool_saturated"] == "warning"
    saturated = next(f for f in report["findings"] if f["code"] == "pool_saturated")
    assert saturated["data"]["application_name"] == "api"
    assert got["connection_limit"] == "critical"
    limit = next(f for f in report["findings"] if f["code"] == "connection_limit")
    assert limit["data"] == {"scope": "role", "name": "limited", "limit": 5, "current": 5}
    assert code == 3


@pytest.mark.all_versions
def test_privileges_plain_role_sees_less_and_says_so(pg: LocalServer,
                                                     workload: Workload) -> None:
    pg.execute("DROP ROLE IF EXISTS plain", "CREATE ROLE plain LOGIN",
               "DROP ROLE IF EXISTS monitor", "CREATE ROLE monitor LOGIN IN ROLE pg_monitor")
    wait_sessions_gone(pg)
    workload.idle(6, "shop-web")
    _, plain = diagnose_report(pg.dsn(user="plain"), window=INSTANT)
    assert codes(plain)["insufficient_privilege"] == "warning"
    assert plain["slots"]["hidden"] == 6
    assert plain["slots"]["client_backends"] == 7
    _, monitor = diagnose_report(pg.dsn(user="monitor"), window=INSTANT)
    assert "insufficient_privilege" not in codes(monitor)
    assert monitor["slots"]["hidden"] == 0
    assert monitor["holders"][0]["states"] == {"idle": 6}


def test_show_queries_is_the_only_way_to_see_query_text(pg: LocalServer,
                                                         workload: Workload) -> None:
    wait_sessions_gone(pg)
    workload.lock_chain("shop-web", 1)
    _, text = run_diagnose("--dsn", pg.dsn(), window=INSTANT)
    assert "UPDATE pgconn_workload_lock" not in text
    _, shown = run_diagnose("--dsn", pg.dsn(), "--show-queries", window=INSTANT)
    assert "UPDATE pgconn_workload_lock" in shown


def test_agent_keeps_its_connection_when_the_server_fills(pg: LocalServer,
                                                          workload: Workload) -> None:
    from agent.collect.client import TargetClient
    from agent.config import Target

    pg.execute("DROP ROLE IF EXISTS app", "CREATE ROLE app LOGIN")
    wait_sessions_gone(pg)
    client = TargetClient(Target("t", pg.dsn(user="app")))
    client.poll()
    workload.idle(96, "flood", user="app")  # every usable slot but the agent's
    snap = client.poll()
    assert sum(g.count for g in snap.groups) == 97
    client.close()
    workload.idle(1, "flood", user="app")  # the agent's slot is gone too
    code, report = diagnose_report(pg.dsn(user="app"), window=INSTANT)
    assert code == 3
    assert report["findings"][0]["code"] == "target_unreachable"
    assert report["findings"][0]["data"] == {"error": "too_many_connections"}


def test_unreachable_and_bad_input_are_one_line_without_traceback() -> None:
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "agent", "diagnose", "--dsn",
                           f"host=127.0.0.1 port={port} password=hunter2 connect_timeout=2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "hunter2" not in proc.stderr + proc.stdout
    assert "Cannot poll 127.0.0.1:" in proc.stdout and ": connect" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "agent", "diagnose", "--dsn",
                          "nonsense hunter2"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "hunter2" not in bad.stderr
    assert "invalid connection string" in bad.stderr


def test_wrong_password_is_an_auth_error(tmp_path: Path) -> None:
    hba = ["local all all trust", "host all all 127.0.0.1/32 scram-sha-256"]
    with LocalServer(hba=hba) as server:
        server.execute("CREATE ROLE agent LOGIN PASSWORD 'right' IN ROLE pg_monitor")
        (tmp_path / "pw").write_text("wrong\n")
        (tmp_path / "pw").chmod(0o600)
        config = tmp_path / "c.toml"
        config.write_text(f"[[targets]]\nname = 'auth'\ndsn = \"{server.dsn(user='agent')}\"\n"
                          f"password_file = '{tmp_path / 'pw'}'\n")
        code, out = run_diagnose("--format", "json", config=config, window=INSTANT)
        report = json.loads(out)["targets"][0]
        assert code == 3 and report["findings"][0]["data"] == {"error": "auth"}
        assert "wrong" not in out
        (tmp_path / "pw").write_text("right\n")
        code, out = run_diagnose("--format", "json", config=config, window=INSTANT)
        assert code == 0, out


@pytest.mark.all_versions
def test_settings_are_read_again_after_a_reload(pg: LocalServer) -> None:
    from agent.collect.client import TargetClient
    from agent.config import Target

    client = TargetClient(Target("t", pg.dsn()))
    try:
        assert client.poll().setting("idle_in_transaction_session_timeout") == 0
        assert client.poll().setting("statement_timeout") == 0  # not the agent's own 5 s
        pg.execute("ALTER SYSTEM SET idle_in_transaction_session_timeout = '90s'",
                   "SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while client.poll().setting("idle_in_transaction_session_timeout") != 90:
            assert time.monotonic() < deadline, "reloaded setting never seen"
            time.sleep(0.1)
    finally:
        pg.execute("ALTER SYSTEM RESET idle_in_transaction_session_timeout",
                   "SELECT pg_reload_conf()")
        client.close()


@pytest.mark.all_versions
def test_opened_counts_each_new_backend_once(pg: LocalServer, workload: Workload) -> None:
    from agent.collect.client import TargetClient
    from agent.config import Target

    client = TargetClient(Target("t", pg.dsn()))
    try:
        first = client.poll()
        assert all(g.opened == 0 for g in first.groups)  # nothing to compare with yet
        workload.idle(4, "newcomer")
        opened = sum(g.opened for g in client.poll().groups
                     if g.application_name == "newcomer")
        assert opened == 4
        assert sum(g.opened for g in client.poll().groups) == 0  # counted once, not again
    finally:
        client.close()


@pytest.mark.all_versions
@pytest.mark.parametrize("dimensions", [
    ("datname", "usename", "application_name", "client_addr", "state"),
    ("application_name", "state"),
])
def test_the_server_side_cap_equals_the_python_cap(pg: LocalServer, workload: Workload,
                                                   dimensions: tuple[str, ...]) -> None:
    from agent import contract
    from agent.aggregate.attribution import attribute
    from agent.collect.client import TargetClient
    from agent.config import Target

    wait_sessions_gone(pg)
    workload.idle(5, "big")
    workload.idle_in_transaction(3, "big", via="unix")
    for i in range(30):
        workload.idle(1 + i % 3, f"app-{i:02d}")
    capped_client = TargetClient(Target("t", pg.dsn()), dimensions=dimensions, max_groups=10)
    whole_client = TargetClient(Target("t", pg.dsn()), dimensions=dimensions, max_groups=10_000)
    try:
        capped_client.connect()
        whole_client.connect()  # both agents' sessions exist for both polls
        capped, whole = capped_client.poll(), whole_client.poll()
    finally:
        capped_client.close()
        whole_client.close()
    assert len(capped.groups) == 10
    overflow = [g for g in capped.groups if g.folded]
    assert len(overflow) == 1 and overflow[0].application_name == contract.OVERFLOW_VALUE
    assert sum(g.count for g in capped.groups) == sum(g.count for g in whole.groups)
    dropped = set(contract.GROUP_DIMENSIONS) - set(dimensions)
    assert all(getattr(g, d) is None for g in capped.groups for d in dropped)
    by_server = attribute(capped, dimensions=dimensions, max_groups=10)
    by_python = attribute(whole, dimensions=dimensions, max_groups=10)
    key = [(g.key, g.count, g.young) for g in by_python.groups]
    assert [(g.key, g.count, g.young) for g in by_server.groups] == key
    assert by_server.folded == by_python.folded == len(whole.groups) - 9


def test_idle_in_transaction_count_is_exact_beyond_the_sessions_read_one_by_one(
        pg: LocalServer, workload: Workload, short_thresholds: Path) -> None:
    """The server's oldest IDLE_TX_LIMIT idle transactions are read row by row; the headline
    counts every one of the holder's from its groups and says what was not read."""
    wait_sessions_gone(pg)
    workload.idle_in_transaction(IDLE_TX_LIMIT + 12, "queue-worker")
    time.sleep(1.2)
    code, text = run_diagnose("--dsn", pg.dsn(), config=short_thresholds, window=INSTANT)
    assert code == 1, text  # a warning: none is idle for idle_in_transaction_critical
    # (its pool is at its cap too: the idle transactions come as that finding's second cause)
    assert f"leaves {IDLE_TX_LIMIT + 12} transactions idle (longest" in text
    assert (f"12 more idle in transaction: younger than 1s, or beyond the {IDLE_TX_LIMIT} "
            "oldest") in text
