"""What differs between PostgreSQL versions, read from real servers of every supported major.

The core collection, diagnosis and catch tests (marked ``all_versions`` in
test_poll_statement.py, test_core_integration.py and test_catch.py) run on every version too;
these check the version gates themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from conftest import VERSIONS

from agent.collect import queries
from agent.collect.client import TargetClient
from agent.collect.part import discover
from agent.collect.parts.settings import SETTING_SINCE, setting_names
from agent.collect.snapshot import DatabaseSessions, Snapshot
from agent.config import Target
from agent.demo.server import LocalServer, installed_bindirs
from agent.demo.workload import Workload

MATRIX_DB = "matrix_sessions"


@pytest.fixture
def client(pg: LocalServer) -> Iterator[TargetClient]:
    agent = TargetClient(Target("t", pg.dsn()))
    yield agent
    agent.close()


def test_every_supported_major_is_installed() -> None:
    """A missing server would otherwise fail every matrix test the same way."""
    missing = sorted(set(VERSIONS) - set(installed_bindirs()))
    assert not missing, f"PostgreSQL {missing} missing: run scripts/setup.sh"
    assert min(VERSIONS) * 10000 == queries.OLDEST_SUPPORTED


def test_the_matrix_picks_every_sql_file() -> None:
    """Every version-gated file (and every setting's gate) is what some matrix server runs."""
    for query in (p.name for p in discover()):
        for version in queries.versions(query):
            picked_by = [m for m in VERSIONS
                         if max((v for v in queries.versions(query) if v <= m * 10000),
                                default=None) == version]
            assert picked_by, f"parts/{query}/{version}.sql runs on no server of {VERSIONS}"
    for name, since in SETTING_SINCE.items():
        assert since // 10000 in VERSIONS, f"{name}: gate {since} is no matrix version"


@pytest.mark.all_versions
def test_settings_gate_is_the_servers_own(pg: LocalServer, client: TargetClient) -> None:
    """Each setting is read from the version that introduced it on, and exists nowhere before."""
    snapshot = client.poll()
    version = snapshot.server_version_num
    assert version // 10000 == pg_major(pg)
    assert sorted(s.name for s in snapshot.settings) == sorted(setting_names(version))
    later = [n for n, since in SETTING_SINCE.items() if since > version]
    assert pg.execute(f"SELECT name FROM pg_settings WHERE name = ANY(ARRAY{later or ['']})") \
        == []


@pytest.mark.all_versions
def test_lock_waits_have_an_age_from_14(pg: LocalServer, workload: Workload,
                                        client: TargetClient) -> None:
    root, waiters = workload.lock_chain("matrix-locker", 2)
    snapshot = poll_until(client, lambda s: {w.pid for w in s.lock_waits} >= set(waiters)
                          and all(w.waitstart for w in s.lock_waits) == (pg_major(pg) >= 14))
    blocked = {s.pid: s.blocking_pids for s in snapshot.sessions if s.pid in waiters}
    assert set(blocked) == set(waiters)
    assert root in {pid for pids in blocked.values() for pid in pids}
    waits = [w for w in snapshot.lock_waits if w.pid in waiters]
    if pg_major(pg) >= 14:
        assert all(w.wait_age is not None and w.wait_age >= 0 for w in waits)
    else:
        assert all(w.waitstart is None and w.wait_age is None for w in waits)


@pytest.mark.all_versions
def test_database_session_counters_from_14(pg: LocalServer, client: TargetClient) -> None:
    """pg_stat_database's session outcomes: 3 closed normally and 1 terminated, exactly."""
    if pg_major(pg) < 14:
        assert queries.load("databases", client.poll().server_version_num) is None
        assert client.poll().databases == ()
        return
    pg.execute(f"DROP DATABASE IF EXISTS {MATRIX_DB}", f"CREATE DATABASE {MATRIX_DB}")
    try:
        dsn = pg.dsn(dbname=MATRIX_DB)
        for _ in range(3):
            psycopg.connect(dsn).close()
        with psycopg.connect(dsn, autocommit=True) as victim:
            pg.execute(f"SELECT pg_terminate_backend({victim.info.backend_pid})")
        want = DatabaseSessions(MATRIX_DB, sessions=4, sessions_abandoned=0, sessions_fatal=0,
                                sessions_killed=1)
        # Before 15 the statistics collector receives a session's end asynchronously.
        snapshot = poll_until(client, lambda s: want in s.databases)
        assert want in snapshot.databases
    finally:
        pg.execute(f"DROP DATABASE IF EXISTS {MATRIX_DB} WITH (FORCE)")


def pg_major(pg: LocalServer) -> int:
    return int(pg.execute("SHOW server_version_num")[0][0]) // 10000


def poll_until(client: TargetClient, ready: Callable[[Snapshot], bool],
               timeout: float = 10.0) -> Snapshot:
    """Poll until ``ready(snapshot)``; the last snapshot either way (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = client.poll()
        if ready(snapshot) or time.monotonic() > deadline:
            return snapshot
        time.sleep(0.1)
