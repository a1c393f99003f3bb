"""PostgreSQL 13 (scripts/fetch-postgres.sh's 13.23 server): no pg_stat_database session
counters and no pg_locks.waitstart. Churn is then what the fast polls caught, reported as a lower
bound; a lock wait's age is unknown, not 0. About 15 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.demo.server import LocalServer
from agent.demo.workload import Workload


@pytest.fixture(scope="module")
def pg13() -> Iterator[LocalServer]:
    with LocalServer(max_connections=100, major=13) as server:
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
