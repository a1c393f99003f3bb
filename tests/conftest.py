"""Shared fixtures: a real PostgreSQL server per session and workloads on it.

Tests marked ``all_versions`` get ``pg`` once per PostgreSQL major of ``VERSIONS`` (Debian's 15,
npm's others: scripts/fetch-postgres.sh); every other test runs on Debian's 15.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_e2e import Situation, situation, start_server
from helm_support import install_helm, use_private_homes

from agent.demo.server import LocalServer
from agent.demo.workload import Workload

pytest_plugins = ["measurements"]

VERSIONS = (12, 13, 14, 15, 16, 17, 18)
"""The version matrix: every major the agent supports (README.md, "Supported PostgreSQL")."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "all_versions: run on every PostgreSQL major of the "
                                       "version matrix (parametrizes the `pg` fixture)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("all_versions"):
        assert "pg" in metafunc.fixturenames, "all_versions needs a test that uses `pg`"
        metafunc.parametrize("pg", VERSIONS, indirect=True, scope="session",
                             ids=[f"pg{v}" for v in VERSIONS])


@pytest.fixture(scope="session")
def pg(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """One throwaway server per session (and per version for ``all_versions`` tests):
    max_connections 100, 3 reserved."""
    major: int | None = getattr(request, "param", None)
    with LocalServer(max_connections=100, superuser_reserved=3, major=major) as server:
        yield server


@pytest.fixture
def workload(pg: LocalServer) -> Iterator[Workload]:
    """Client sessions that end with the test, so each test sees only its own situation."""
    with Workload(pg.dsn(), pg.dsn(via="unix")) as work:
        yield work


@pytest.fixture(scope="module")
def e2e_server() -> Iterator[LocalServer]:
    """A server for the agent-as-a-process tests: ``agent_e2e.start_server()``, one per module."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def held(e2e_server: LocalServer) -> Iterator[Situation]:
    """``agent_e2e.situation()`` held on ``e2e_server`` for the whole module."""
    with situation(e2e_server) as s:
        yield s


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The helm command (tests/helm_support.py), with private homes; fails, never skips, when
    it cannot be installed."""
    binary = install_helm()
    use_private_homes(tmp_path_factory.mktemp("helm-home"))
    yield [binary]
