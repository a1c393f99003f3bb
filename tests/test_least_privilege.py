"""Least privilege, proven on a real server with ``log_statement = 'all'``.

* A role with ``pg_monitor`` and nothing else runs the whole daemon: every metric family it
  should have, no hidden session, no poll error.
* A plain login role still runs: it exports what it can see (slots, settings, backends, its
  own session) and reports how many sessions it cannot see in ``pgconn_agent_sessions_hidden``.
* The server's statement log shows everything the agent ever sent: read-only transactions of
  SELECT/WITH statements plus ``SET LOCAL statement_timeout`` / ``lock_timeout``; never a
  write, DDL, ``SET ROLE``, ``SET SESSION AUTHORIZATION`` or ``set_config``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from agent_e2e import Agent, wait_until
from click.testing import CliRunner

from agent import contract as c
from agent.cli import main
from agent.demo.server import LocalServer
from agent.demo.workload import Workload

APP_SESSIONS = 6
LOCK_WAITERS = 2
LOG_PREFIX = "@@ %m [%p] app=%a user=%u @@ "
"""``log_line_prefix`` that makes entries easy to split and attribute."""
_ENTRY = re.compile(r"^@@ \S+ \S+ \S+ \[(\d+)\] app=(.*?) user=(.*?) @@ ", re.M)
_STATEMENT = re.compile(r"^(?:LOG|STATEMENT):\s+(?:statement|execute [^:]*|bind [^:]*):\s*",
                        re.S)


def logged_statements(log: str, app: str) -> list[str]:
    """Every statement the server logged (``log_statement = 'all'``) for ``application_name``
    ``app``: simple-protocol statements and extended-protocol executions alike."""
    out = []
    marks = list(_ENTRY.finditer(log))
    for i, mark in enumerate(marks):
        if mark.group(2) != app:
            continue
        end = marks[i + 1].start() if i + 1 < len(marks) else len(log)
        body = log[mark.end():end]
        found = _STATEMENT.match(body)
        if found:
            out.append(body[found.end():].strip())
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    settings = {"log_statement": "'all'", "log_line_prefix": f"'{LOG_PREFIX}'",
                "log_connections": "on"}
    with LocalServer(max_connections=50, settings=settings) as srv:
        srv.execute("CREATE ROLE monitor LOGIN IN ROLE pg_monitor", "CREATE ROLE plain LOGIN",
                    "CREATE ROLE shop LOGIN")
        yield srv


@pytest.fixture(scope="module")
def held(server: LocalServer) -> Iterator[Workload]:
    with Workload(server.dsn()) as work:
        work.idle(APP_SESSIONS, "shop-web", user="shop")
        work.idle_in_transaction(1, "shop-web", user="shop")
        work.lock_chain("locker", LOCK_WAITERS)
        yield work


def run_agent(server: LocalServer, role: str) -> Agent:
    return Agent(["--dsn", server.dsn(user=role), "--listen", "127.0.0.1:0",
                  "--interval", "0.3"]).started()


def metric(agent: Agent, spec: c.MetricSpec, **labels: str) -> float | None:
    return agent.value(spec.prometheus_name, **labels)


def total(agent: Agent, spec: c.MetricSpec, **labels: str) -> float:
    return sum(v for n, lab, v in agent.samples() if n == spec.prometheus_name
               and all(lab.get(k) == x for k, x in labels.items()))


def test_monitor_role_has_pg_monitor_and_nothing_else(server: LocalServer) -> None:
    rows = server.execute("SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, "
                          "r.rolbypassrls, array(SELECT b.rolname::text FROM pg_auth_members m "
                          "JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid) "
                          "FROM pg_roles r WHERE r.rolname = 'monitor'")
    assert rows == [(False, False, False, False, False, ["pg_monitor"])]


def test_the_daemon_runs_fully_as_pg_monitor(server: LocalServer, held: Workload) -> None:
    with run_agent(server, "monitor") as agent:
        wait_until(lambda: metric(agent, c.CONNECTION_COUNT, application_name="shop-web",
                                  state="idle") == APP_SESSIONS, 20, "shop-web's idle sessions")
        assert metric(agent, c.AGENT_UP) == 1
        assert metric(agent, c.SESSIONS_HIDDEN) == 0
        assert metric(agent, c.CONNECTION_COUNT, application_name="shop-web",
                      state="idle in transaction") == 1
        assert metric(agent, c.TRANSACTION_AGE_MAX, application_name="shop-web",
                      state="idle in transaction") is not None
        assert total(agent, c.LOCK_BLOCKING, application_name="locker") == LOCK_WAITERS
        assert total(agent, c.LOCK_WAITING, application_name="locker") == LOCK_WAITERS
        assert metric(agent, c.CONNECTION_MAX) == 50
        assert metric(agent, c.SESSIONS, datname="postgres", outcome="all") is not None
        assert total(agent, c.POLL_ERRORS) == 0, [
            x for x in agent.samples() if x[0] == c.POLL_ERRORS.prometheus_name]
        code, _ = agent.stop()
        assert code == 0


def test_a_plain_role_exports_what_it_can_see(server: LocalServer, held: Workload) -> None:
    others = APP_SESSIONS + 1 + 1 + LOCK_WAITERS  # shop's sessions, the lock holder, waiters
    with run_agent(server, "plain") as agent:
        hidden = wait_until(lambda: (h := metric(agent, c.SESSIONS_HIDDEN)) and h >= others
                            and h, 20, "hidden sessions to be counted")
        hidden_series = [v for n, lab, v in agent.samples()
                         if n == c.CONNECTION_COUNT.prometheus_name and lab["state"] == c.HIDDEN]
        assert sum(hidden_series) == hidden
        assert metric(agent, c.CONNECTION_COUNT, state=c.HIDDEN, application_name="shop-web",
                      usename="shop") == APP_SESSIONS + 1
        assert metric(agent, c.AGENT_UP) == 1
        assert metric(agent, c.CONNECTION_MAX) == 50
        assert total(agent, c.SETTING, name="max_connections") == 50
        assert metric(agent, c.BACKEND_COUNT, backend_type="client backend") is not None
        assert metric(agent, c.CONNECTION_COUNT, application_name="pgconn-agent",
                      usename="plain", state="active") == 1  # its own session, in full
        assert total(agent, c.POLL_ERRORS) == 0, [
            x for x in agent.samples() if x[0] == c.POLL_ERRORS.prometheus_name]
        assert agent.stop()[0] == 0
    result = CliRunner().invoke(main, ["diagnose", "--dsn", server.dsn(user="plain"),
                                       "--format", "json"], catch_exceptions=False)
    assert '"code": "insufficient_privilege"' in result.output


FORBIDDEN = re.compile(
    r"\b(insert|update|delete|merge|truncate|create|alter|drop|grant|revoke|copy|call|do|"
    r"vacuum|analyze|cluster|reindex|refresh|notify|listen|prepare\s+transaction|"
    r"set\s+role|set\s+session|reset|set_config|pg_terminate_backend|pg_cancel_backend|"
    r"lo_\w+|dblink\w*)\b", re.I)
ALLOWED_SET = re.compile(r"SET (LOCAL )?(statement_timeout|lock_timeout) = \d+")
"""The agent's own timeouts, for its transaction or its session: nothing else is ever SET."""


def without_literals(statement: str) -> str:
    statement = re.sub(r"--[^\n]*", " ", statement)
    return re.sub(r"'(?:[^']|'')*'", "''", statement)


def test_every_agent_session_is_read_only_from_its_start(server: LocalServer) -> None:
    """Belt and braces: even a statement the log check missed could not write, because the
    agent's connection string starts every session with default_transaction_read_only."""
    import psycopg

    from agent.collect.client import connection_string
    from agent.config import Target

    dsn = connection_string(Target("t", server.dsn(user="monitor", options="-c work_mem=8MB")))
    with psycopg.connect(dsn, autocommit=True, application_name="read-only-probe") as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)  # the user's options kept
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TEMP TABLE t (x int)")


def test_the_statement_log_shows_no_write_ddl_or_role_change(server: LocalServer,
                                                             held: Workload) -> None:
    """Runs after the two daemons above (and works alone: it runs one itself)."""
    with run_agent(server, "monitor") as agent:
        wait_until(lambda: metric(agent, c.AGENT_UP) == 1
                   and (agent.value(c.POLL_DURATION.prometheus_name + "_count") or 0) >= 3,
                   20, "three polls")
        agent.stop()
    statements = logged_statements(server.log_text(), "pgconn-agent")
    assert len(statements) >= 3, server.log_text()[-3000:]
    kinds: set[str] = set()
    for statement in statements:
        clean = without_literals(statement)
        assert not FORBIDDEN.search(clean), f"forbidden statement: {statement[:300]!r}"
        for part in (p.strip() for p in clean.split(";") if p.strip()):
            word = part.split()[0].upper()
            kinds.add(word)
            assert word in ("BEGIN", "SET", "SELECT", "WITH", "COMMIT", "ROLLBACK"), part[:200]
            if word == "SET":
                assert ALLOWED_SET.fullmatch(part), part
            if word == "BEGIN":
                assert part.upper() == "BEGIN READ ONLY", part
    assert "SET" in kinds and kinds & {"SELECT", "WITH"}
    assert any("pg_stat_activity" in s for s in statements)  # the poll itself was captured
