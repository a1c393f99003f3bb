"""A target that stops answering, as a process against a real server.

The agent's own backend is stopped with SIGSTOP: its TCP connection stays open and the kernel
keeps ACKing, so only the agent's client-side deadline can end the poll. Also: SIGTERM during
such a hang, a target removed by SIGHUP while its poll hangs, /readyz beside a blackholed
target, and reloads that change every setting.
"""

from __future__ import annotations

import base64
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
from agent_e2e import (
    COUNT,
    ERRORS,
    POLLS,
    SERVER_DATA,
    SKIPPED,
    UP,
    Agent,
    agent_backends,
    blackhole,
    polling_agent,
    stopped,
    target_name,
    wait_until,
)
from otlp_receiver import HttpReceiver, agent_env
from pooler_support import LocalBouncer

from agent import contract as c
from agent.collect.client import POLL_DEADLINE_S
from agent.config import default_target_name
from agent.demo.server import LocalServer, free_port
from agent.demo.workload import Workload

INTERVAL = 0.5
OPENED = c.CONNECTION_OPENED.prometheus_name


def series_of(agent: Agent, target: str) -> list[str]:
    return [n for n, lab, _ in agent.samples() if lab.get("target") == target]


def test_stopped_backend_is_up_0_with_a_timeout_then_reconnects(
        e2e_server: LocalServer) -> None:
    target = target_name(e2e_server)
    with Workload(e2e_server.dsn()) as work, \
            polling_agent(e2e_server.dsn(), interval=INTERVAL) as agent:
        work.idle(3, "stalled-app")
        agent.started()
        wait_until(lambda: agent.value(COUNT, application_name="stalled-app") == 3, 15,
                   "the workload's sessions")
        [pid] = agent_backends(e2e_server)
        samples: list[tuple[float | None, int]] = []
        timeouts = 0.0
        with stopped(pid):
            start = time.monotonic()
            while not timeouts and time.monotonic() - start < INTERVAL + POLL_DEADLINE_S + 5:
                rows = [(n, lab, v) for n, lab, v in agent.samples()
                        if lab.get("target") == target]
                up = next((v for n, _, v in rows if n == UP), None)
                timeouts = next(v for n, lab, v in rows
                                if n == ERRORS and lab["error"] == "timeout")
                samples.append((up, sum(1 for n, _, _ in rows if n.startswith(SERVER_DATA))))
                time.sleep(0.1)
            to_error = time.monotonic() - start
            assert timeouts >= 1 and to_error <= INTERVAL + POLL_DEADLINE_S + 2, \
                f"{timeouts} timeouts counted within {to_error:.1f}s of SIGSTOP"
            assert any(up == 0 for up, _ in samples), "up never read 0 during the freeze"
            assert all(data == 0 for up, data in samples if up == 0), \
                "server data exported while the target was down"
            # A new connection while the old backend is still stopped: back to up 1.
            wait_until(lambda: agent.value(UP, target=target) == 1, 15, "up 1 again")
            wait_until(lambda: agent.value(COUNT, application_name="stalled-app") == 3, 15,
                       "fresh data")
        # The stuck connection was dropped: once continued, the old backend exits.
        wait_until(lambda: pid not in agent_backends(e2e_server), 10, "the old backend gone")
        assert len(agent_backends(e2e_server)) == 1
        logs = agent.logs()
        failed = [r for r in logs if r.get("msg") == "poll failed"]
        assert failed and failed[0]["error"] == "timeout", failed
        assert "statement cancelled, connection dropped" in str(failed[0]["detail"])
        code, _ = agent.stop()
        assert code == 0
        assert "Traceback" not in agent.stderr()


def test_stopped_pgbouncer_is_up_0_with_a_timeout(e2e_server: LocalServer) -> None:
    with LocalBouncer(e2e_server) as bouncer:
        target = default_target_name(bouncer.console_dsn())
        with polling_agent(bouncer.console_dsn(), interval=INTERVAL) as agent:
            agent.started()
            wait_until(lambda: agent.value(UP, target=target) == 1, 15, "the console polled")
            with stopped(bouncer.pid):
                wait_until(lambda: (agent.value(ERRORS, target=target, error="timeout") or 0)
                           >= 1, INTERVAL + POLL_DEADLINE_S + 3, "a timeout of the console")
                assert agent.value(UP, target=target) == 0
                code, took = agent.stop()
            assert code == 0 and took < 5, (code, took)


def test_sigterm_during_a_hang_exits_0_within_5s_with_a_last_export(
        e2e_server: LocalServer) -> None:
    target = target_name(e2e_server)
    with HttpReceiver() as receiver:
        env = agent_env(receiver, 600_000)  # no periodic export: only the last one
        with polling_agent(e2e_server.dsn(), interval=INTERVAL, env=env) as agent:
            agent.started()
            wait_until(lambda: agent.value(UP, target=target) == 1, 15, "up 1")
            [pid] = agent_backends(e2e_server)
            with stopped(pid):
                wait_until(lambda: (agent.value(SKIPPED, target=target) or 0) >= 1, 10,
                           "a poll hanging on the stopped backend")
                code, took = agent.stop(timeout=15)
            assert code == 0 and took < 5, (code, took, agent.stderr()[-2000:])
            assert receiver.latest_value(c.AGENT_UP.name, target=target) is not None, \
                "no last export"
            assert "Traceback" not in agent.stderr()


def test_target_removed_while_its_poll_hangs_leaves_no_series(e2e_server: LocalServer,
                                                              tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    # Distinct ``server`` names: two polls of their own, as for targets on two servers.
    keep = f'[[targets]]\nname = "keep"\nserver = "a"\ndsn = "{e2e_server.dsn()}"\n'
    gone = (f'[[targets]]\nname = "gone"\nserver = "b"\n'
            f'dsn = "{e2e_server.dsn(dbname="template1")}"\n')
    config.write_text(f'[agent]\ninterval = {INTERVAL}\nlisten = "127.0.0.1:0"\n\n'
                      f'{keep}\n{gone}')
    with Agent(["--config", str(config)]) as agent:
        agent.started()
        wait_until(lambda: agent.value(UP, target="gone") == 1, 15, "the doomed target up")
        [pid] = wait_until(lambda: agent_backends(e2e_server, "template1"), 10, "its backend")
        with stopped(pid):
            wait_until(lambda: (agent.value(SKIPPED, target="gone") or 0) >= 1, 10,
                       "its poll hanging")
            config.write_text(f'[agent]\ninterval = {INTERVAL}\nlisten = "127.0.0.1:0"\n\n'
                              f'{keep}')
            agent.signal(signal.SIGHUP)
            wait_until(lambda: any(r.get("msg") == "configuration reloaded"
                                   for r in agent.logs()), 10, "the reload")
            time.sleep(1)
        # Continued: a poll that was still waiting would now finish and publish.
        polls = agent.value(POLLS, target="keep") or 0
        wait_until(lambda: (agent.value(POLLS, target="keep") or 0) >= polls + 4, 10,
                   "more polls of the kept target")
        assert series_of(agent, "gone") == []
        assert agent.value(UP, target="keep") == 1
        assert "Traceback" not in agent.stderr()


def test_readyz_stays_200_beside_a_blackholed_target(e2e_server: LocalServer) -> None:
    """30 s: the blackholed target backs off (1, 2, 4, 8, 16 s), each attempt hanging for its
    connect timeout; readiness must not flap with it."""
    with blackhole() as port:
        hung = f"127.0.0.1:{port}/postgres"
        with polling_agent(e2e_server.dsn(),
                           f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                           interval=INTERVAL) as agent:
            agent.started()
            wait_until(lambda: agent.get("/readyz")[0] == 200, 15, "/readyz 200")
            answers: list[tuple[int, str]] = []
            end = time.monotonic() + 30
            while time.monotonic() < end:
                answers.append(agent.get("/readyz"))
                time.sleep(0.25)
            assert agent.value(UP, target=hung) == 0
            assert (agent.value(ERRORS, target=hung, error="timeout") or 0) >= 2
            unready = [a for a in answers if a[0] != 200]
            assert not unready, f"{len(unready)} of {len(answers)} not 200: {unready[:3]}"


def test_reload_applies_listen_logging_otlp_and_a_lower_max_groups(
        e2e_server: LocalServer, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    targets = f'[[targets]]\nname = "db"\ndsn = "{e2e_server.dsn()}"\n'
    config.write_text(f'[agent]\ninterval = {INTERVAL}\nlisten = "127.0.0.1:0"\n'
                      f'log_format = "json"\nmax_groups = 200\n\n{targets}')
    with (Workload(e2e_server.dsn()) as work, HttpReceiver() as receiver,
          Agent(["--config", str(config)], log_format=None) as agent):
        agent.started()
        old_url = agent.url

        def new_names(batches: range) -> None:
            """Distinct names one batch a poll: the opened keys accumulate."""
            for batch in batches:
                polls = agent.value(POLLS, target="db") or 0
                work.named([f"batch{batch}-{i}" for i in range(3)])
                agent.wait_polls(polls + 2, 10, "two polls", target="db")
                work.close_oldest(3)

        new_names(range(8))
        assert len(opened_series(agent)) >= 20, opened_series(agent)

        port = free_port()
        config.write_text(f'[agent]\ninterval = {INTERVAL}\nlisten = "127.0.0.1:{port}"\n'
                          f'log_format = "text"\nmax_groups = 5\n\n'
                          f'[otlp]\nendpoint = "{receiver.endpoint}"\n'
                          f'protocol = "{receiver.protocol}"\nexport_interval = 0.5\n\n'
                          f'{targets}')
        agent.signal(signal.SIGHUP)
        wait_until(lambda: "info    configuration reloaded" in agent.stderr(), 10,
                   "the reload, logged as text")
        agent.listen = f"127.0.0.1:{port}"
        receiver.wait_for(lambda: receiver.latest_value(c.AGENT_UP.name, target="db") == 1,
                          15, "OTLP export after the reload")
        new_names(range(8, 14))
        assert 0 < len(opened_series(agent)) <= 5
        assert agent.get("/healthz") == (200, "ok\n")
        agent.listen = old_url.removeprefix("http://")
        try:
            agent.get("/healthz", timeout=2)
        except (OSError, urllib.error.URLError):
            pass
        else:
            raise AssertionError("the old address still answers")
        assert "Traceback" not in agent.stderr()
        assert "need a restart" not in agent.stderr()


def opened_series(agent: Agent) -> list[dict[str, str]]:
    return [lab for n, lab, _ in agent.samples() if n == OPENED and lab.get("target") == "db"]


def test_reload_reads_the_web_config_file_again(e2e_server: LocalServer,
                                                tmp_path: Path) -> None:
    def user_hash(password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()

    def healthz(agent: Agent, password: str | None = None) -> int:
        request = urllib.request.Request(agent.url + "/healthz")
        if password:
            token = base64.b64encode(f"prometheus:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def reload(agent: Agent) -> None:
        moves = sum(1 for r in agent.logs() if r.get("msg") == "listening")
        agent.signal(signal.SIGHUP)
        record = wait_until(lambda: [r for r in agent.logs() if r.get("msg") == "listening"]
                            [moves:], 10, "the listener restarted")[-1]
        agent.listen = str(record["listen"])

    config, web = tmp_path / "agent.toml", tmp_path / "web.yml"
    agent_table = f'[agent]\ninterval = {INTERVAL}\nlisten = "127.0.0.1:0"\n'
    targets = f'[[targets]]\nname = "db"\ndsn = "{e2e_server.dsn()}"\n'
    config.write_text(f"{agent_table}\n{targets}")
    with Agent(["--config", str(config)]) as agent:
        agent.started()
        assert healthz(agent) == 200
        web.write_text(f"basic_auth_users:\n  prometheus: '{user_hash('first')}'\n")
        config.write_text(f'{agent_table}web_config_file = "{web}"\n\n{targets}')
        reload(agent)
        assert (healthz(agent), healthz(agent, "first")) == (401, 200)
        web.write_text(f"basic_auth_users:\n  prometheus: '{user_hash('second')}'\n")
        reload(agent)  # same path, new content (a rotated password or certificate)
        assert (healthz(agent, "first"), healthz(agent, "second")) == (401, 200)
        web.write_text("basic_auth_users: [\n")
        agent.signal(signal.SIGHUP)
        wait_until(lambda: any(r.get("level") == "error" and str(web) in str(r.get("error"))
                               for r in agent.logs()), 10, "the rejected file")
        assert healthz(agent, "second") == 200
        assert "Traceback" not in agent.stderr()
