"""Real node-postgres pools (npm ``pg``, the pool under Prisma 7's adapter) diagnosed as users
meet them: many pool instances in one service hoard idle slots; one pool at its cap queues
requests while all its connections are busy. About 20 s.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from agent_e2e import wait_sessions_gone
from click.testing import CliRunner

from agent.cli import main
from agent.demo.server import LocalServer

ROOT = Path(__file__).resolve().parent.parent
POOLS_JS = Path(__file__).with_name("node") / "pools.js"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "install-node-clients.sh")],
                         capture_output=True, text=True, check=True, timeout=300)
    return Path(out.stdout.strip()) / "node_modules"


@contextmanager
def node_pools(pg: LocalServer, node_modules: Path, mode: str, app: str, *args: str
               ) -> Iterator[str]:
    """Runs pools.js until the block ends, then ends its sessions (a backend in pg_sleep does
    not notice its client left); yields the "ready" line."""
    url = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    proc = subprocess.Popen(["node", str(POOLS_JS), mode, url, app, *args],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NODE_PATH": str(node_modules)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), (line, proc.stderr.read() if proc.stderr else "")
        yield line
    finally:
        proc.kill()
        proc.wait(10)
        pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   f"WHERE application_name = '{app}'")


def diagnose(dsn: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["diagnose", "--dsn", dsn, "--format", "json", *args],
                                catch_exceptions=False)
    return result.exit_code, json.loads(result.output)["targets"][0]


def test_many_pool_instances_hoard_idle_slots(pg: LocalServer, node_modules: Path) -> None:
    wait_sessions_gone(pg)
    with node_pools(pg, node_modules, "instances", "node-shop", "7", "10"):
        code, report = diagnose(pg.dsn())
    shop = next(f for f in report["findings"]
                if f["data"].get("application_name") == "node-shop")
    assert shop["code"] == "idle_hoarding", shop
    assert shop["title"].startswith("node-shop keeps 70 connections idle")
    assert "several pool instances" in shop["title"]
    assert sum("node-shop" in f["title"] for f in report["findings"]) == 1
    assert code == 1


def test_one_pool_at_its_cap_shows_what_its_connections_do(pg: LocalServer,
                                                           node_modules: Path) -> None:
    wait_sessions_gone(pg)
    with node_pools(pg, node_modules, "cap", "node-api", "10") as ready:
        assert ready.split()[2:] == ["10", "20"]  # 10 connections, 20 requests queued
        code, report = diagnose(pg.dsn(), "--show-queries")
    api = next(f for f in report["findings"] if f["data"].get("application_name") == "node-api")
    assert api["code"] == "pool_saturated", api
    assert api["title"] == "node-api has all 10 of its connections busy (its pool is at its cap)"
    assert api["data"]["waiting"] == 10 and api["data"]["blocked"] == 0
    evidence = "\n".join(api["evidence"])
    assert "10 active: 10 waiting (10 Timeout/PgSleep), 0 running" in evidence
    assert api["data"]["oldest_statement_seconds"] >= 4  # running through the 5 s window
    assert api["data"]["median_statement_seconds"] >= 4
    assert "statement age: oldest" in evidence
    # --show-queries: the statement, normalised; query_id only where the server computes it
    assert api["data"]["top_statements"] == [
        {"query": "SELECT pg_sleep(?)", "query_id": None, "count": 10}]
    assert code == 1
