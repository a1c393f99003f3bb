"""Faults the daemon must live through, as a process against a real server.

Complements tests/test_daemon_faults.py (server restart, collector outage, refused and hung
targets, SIGHUP with broken TOML), without repeating it:

* the agent's own backend killed by ``pg_terminate_backend``: the poll error is counted (the
  gap shows), the agent reconnects on the next attempt and ``up`` is 1 again;
* the server full when the agent starts: refused as ``too_many_connections``, retried with
  backoff, polled as soon as a slot frees; ``diagnose`` reports the refusal as a finding;
* a catalog held by ``ACCESS EXCLUSIVE`` in another session: the poll runs into the agent's
  ``lock_timeout`` (1 s; ``statement_timeout`` is 5 s), counted as ``timeout``; the daemon lives;
* a target host that does not resolve: a one-line ``connect`` error, the other target unharmed;
* config files replaced by hostile garbage (non-UTF-8 bytes, ``interval = inf``, a thousand
  nested arrays, a newline in a key) on SIGHUP: the running configuration is kept, one
  one-line error is logged per reload, never a traceback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from agent_e2e import ERRORS, POLLS, UP, Agent, target_name, wait_until
from click.testing import CliRunner

from agent import contract as c
from agent.cli import main
from agent.demo.server import LocalServer

MAX_CONNECTIONS, RESERVED = 12, 3


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(max_connections=MAX_CONNECTIONS, superuser_reserved=RESERVED) as srv:
        srv.execute("CREATE ROLE monitor LOGIN IN ROLE pg_monitor", "CREATE ROLE filler LOGIN")
        yield srv


def run(*dsns: str, config: Path | None = None) -> Agent:
    args = [a for dsn in dsns for a in ("--dsn", dsn)]
    if config is None:
        args += ["--listen", "127.0.0.1:0", "--interval", "0.3"]
    else:
        args += ["--config", str(config)]
    return Agent(args).started()


def errors(agent: Agent, name: str, kind: str) -> float:
    return agent.value(ERRORS, target=name, error=kind) or 0.0


def agent_pids(server: LocalServer) -> list[int]:
    return [r[0] for r in server.execute("SELECT pid FROM pg_stat_activity WHERE "
                                         "application_name = 'pgconn-agent'")]


def no_traceback(agent: Agent) -> None:
    assert "Traceback" not in agent.stderr(), agent.stderr()[-3000:]


def test_terminated_backend_reconnects_and_the_gap_shows(server: LocalServer) -> None:
    name = target_name(server)
    with run(server.dsn(user="monitor")) as agent:
        wait_until(lambda: agent.value(UP, target=name) == 1, 15, "up")
        [old] = wait_until(lambda: agent_pids(server), 10, "the agent's backend")
        assert errors(agent, name, "connect") == 0
        server.execute(f"SELECT pg_terminate_backend({old})")
        wait_until(lambda: errors(agent, name, "connect") >= 1, 15, "the failed poll counted")
        wait_until(lambda: agent.value(UP, target=name) == 1, 15, "up again")
        [new] = agent_pids(server)
        assert new != old
        assert errors(agent, name, "connect") == 1
        logs = agent.logs()
        failed = [r for r in logs if r.get("msg") == "poll failed"]
        assert len(failed) == 1 and failed[0]["error"] == "connect"
        assert "\n" not in failed[0]["detail"] and "terminat" in failed[0]["detail"]
        assert any(r.get("msg") == "target recovered" for r in logs)
        assert agent.stop()[0] == 0
        no_traceback(agent)


def test_server_full_at_start_is_reported_retried_and_recovers(server: LocalServer) -> None:
    name = target_name(server)
    fillers = [psycopg.connect(server.dsn(user="filler"), autocommit=True)
               for _ in range(MAX_CONNECTIONS - RESERVED)]
    try:
        result = CliRunner().invoke(main, ["diagnose", "--dsn", server.dsn(user="monitor"),
                                           "--format", "json"], catch_exceptions=False)
        assert result.exit_code == 3
        finding = json.loads(result.output)["targets"][0]["findings"][0]
        assert finding["code"] == "target_unreachable"
        assert finding["data"] == {"error": "too_many_connections"}
        with run(server.dsn(user="monitor")) as agent:
            wait_until(lambda: errors(agent, name, "too_many_connections") >= 2, 15,
                       "refusals counted and retried")
            assert agent.value(UP, target=name) == 0
            fillers.pop().close()
            wait_until(lambda: agent.value(UP, target=name) == 1, 20, "up once a slot frees")
            assert agent.value(c.CONNECTION_COUNT.prometheus_name, target=name,
                               usename="filler", state="idle") == MAX_CONNECTIONS - RESERVED - 1
            assert agent.stop()[0] == 0
            no_traceback(agent)
    finally:
        for conn in fillers:
            conn.close()


def test_locked_catalog_times_out_and_the_daemon_lives(server: LocalServer) -> None:
    name = target_name(server)
    with run(server.dsn(user="monitor")) as agent:
        wait_until(lambda: agent.value(UP, target=name) == 1, 15, "up")
        with psycopg.connect(server.dsn(via="unix")) as locker:
            locker.execute("LOCK TABLE pg_catalog.pg_database IN ACCESS EXCLUSIVE MODE")
            wait_until(lambda: errors(agent, name, "timeout") >= 2, 20,
                       "polls to run into lock_timeout")
            assert agent.value(UP, target=name) == 0
            locker.rollback()
        wait_until(lambda: agent.value(UP, target=name) == 1, 20, "up after the lock")
        failed = [r for r in agent.logs() if r.get("msg") == "poll failed"]
        assert failed and all(r["error"] == "timeout" for r in failed)
        assert "lock timeout" in failed[0]["detail"]
        assert agent.proc.poll() is None
        assert agent.stop()[0] == 0
        no_traceback(agent)


def test_unresolvable_host_is_one_line_and_spares_the_other_target(server: LocalServer) -> None:
    bad_dsn = "host=no-such-host.invalid port=5432 user=agent password=hunter2"
    proc = subprocess.run([sys.executable, "-m", "agent", "diagnose", "--dsn", bad_dsn],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stdout + proc.stderr and "hunter2" not in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if "no-such-host.invalid" in x
                and "resolve" in x)
    assert ": connect: " in line
    bad = "no-such-host.invalid:5432/postgres"
    with run(server.dsn(user="monitor"), bad_dsn) as agent:
        wait_until(lambda: errors(agent, bad, "connect") >= 2, 15, "DNS failures counted")
        assert agent.value(UP, target=bad) == 0
        assert agent.value(UP, target=target_name(server)) == 1
        assert errors(agent, target_name(server), "connect") == 0
        assert agent.stop()[0] == 0
        assert "hunter2" not in agent.stderr()
        no_traceback(agent)


GARBAGE: list[bytes] = [
    b"\xff\xfe\x00garbage\x80",
    b"[agent]\ninterval = inf\n[[targets]]\ndsn = 'host=127.0.0.1'\n",
    b"[agent]\ninterval = 1e300\n",
    b"x = " + b"[" * 1000 + b"]" * 1000 + b"\n",
    b'[agent]\n"two\\nlines" = 1\n',
    b"",
]


def test_sighup_with_hostile_config_keeps_the_running_one(server: LocalServer,
                                                          tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\ninterval = 0.3\nlisten = "127.0.0.1:0"\n\n'
                      f'[[targets]]\nname = "db"\ndsn = "{server.dsn(user="monitor")}"\n')
    with run(config=config) as agent:
        wait_until(lambda: agent.value(UP, target="db") == 1, 15, "up")
        for i, garbage in enumerate(GARBAGE, start=1):
            config.write_bytes(garbage)
            agent.signal(signal.SIGHUP)
            def rejections(n: int = i) -> list[dict[str, Any]] | None:
                r = [x for x in agent.logs() if x.get("msg", "").startswith("reload rejected")]
                return r if len(r) >= n else None

            rejected = wait_until(rejections, 10, f"reload {i} rejected")
            message = rejected[-1]["error"]
            assert message.startswith(str(config)) and message.isprintable(), message
            polls = agent.value(POLLS, target="db") or 0
            agent.wait_polls(polls + 2, 10, "polling to go on", target="db")
            assert agent.value(UP, target="db") == 1
        assert agent.proc.poll() is None
        assert agent.stop()[0] == 0
        no_traceback(agent)
