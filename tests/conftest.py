"""Shared fixtures: a real PostgreSQL server per session and workloads on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.pgserver import LocalServer
from agent.workload import Workload


@pytest.fixture(scope="session")
def pg() -> Iterator[LocalServer]:
    """One throwaway server for the session: max_connections 100, 3 reserved."""
    with LocalServer(max_connections=100, superuser_reserved=3) as server:
        yield server


@pytest.fixture
def workload(pg: LocalServer) -> Iterator[Workload]:
    """Client sessions that end with the test, so each test sees only its own situation."""
    with Workload(pg.dsn(), pg.dsn(via="unix")) as work:
        yield work


@pytest.fixture(scope="module")
def e2e_server() -> Iterator[LocalServer]:
    """A server for the agent-as-a-process tests: ``agent_e2e.start_server()``, one per module."""
    from agent_e2e import start_server

    server = start_server()
    try:
        yield server
    finally:
        server.stop()
