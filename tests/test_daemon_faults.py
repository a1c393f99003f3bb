"""The daemon under faults, as a process: server restart, collector outage, dead and hung
targets, SIGTERM, SIGHUP reloads, health endpoints. Real server, real exporters, no mocks."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from agent_e2e import (
    COUNT,
    ERRORS,
    POLLS,
    SERVER_DATA,
    SKIPPED,
    UP,
    Agent,
    blackhole,
    closed_port,
    polling_agent,
    target_name,
    wait_until,
)
from otlp_receiver import GrpcReceiver, HttpReceiver, agent_env

from agent import contract as c
from agent.demo.server import LocalServer
from agent.demo.workload import Workload


def warnings_and_errors(agent: Agent) -> list[dict[str, object]]:
    return [r for r in agent.logs() if r.get("level") in ("warning", "error", "critical")]


def test_server_restart_up_goes_0_then_back_to_1_without_stale_series(
        e2e_server: LocalServer) -> None:
    target = target_name(e2e_server)
    work = Workload(e2e_server.dsn(), e2e_server.dsn(via="unix"))
    try:
        work.idle(5, "before-restart")
        with polling_agent(e2e_server.dsn()) as agent:
            agent.started()
            wait_until(lambda: agent.value(COUNT, application_name="before-restart") == 5,
                       15, "the workload's sessions")
            samples: list[tuple[float | None, int]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    try:
                        rows = agent.samples()
                    except OSError:
                        continue
                    up = next((v for n, lab, v in rows
                               if n == UP and lab.get("target") == target), None)
                    data = sum(1 for n, lab, _ in rows if n.startswith(SERVER_DATA)
                               and lab.get("target") == target)
                    samples.append((up, data))
                    stop.wait(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                e2e_server.restart()
                wait_until(lambda: any(up == 0 for up, _ in samples), 15, "up 0")
                wait_until(lambda: samples[-1][0] == 1 and samples[-1][1] > 0, 20,
                           "up back to 1 with fresh data")
            finally:
                stop.set()
                sampler.join(5)
            down = [data for up, data in samples if up == 0]
            assert down and all(n == 0 for n in down), \
                "server data was exported while the target was down"
            # Back by itself, and the killed workload is gone (no stale group kept).
            assert agent.value(COUNT, application_name="before-restart") is None
            assert agent.value(COUNT, application_name="pgconn-agent") == 1
            errors = agent.value(ERRORS, target=target, error="connect")
            assert errors is not None and errors >= 1, errors
            logs = agent.logs()
            assert any(r.get("msg") == "target recovered" for r in logs)
            assert len(warnings_and_errors(agent)) <= 3, warnings_and_errors(agent)
            code, _ = agent.stop()
            assert code == 0
            assert "Traceback" not in agent.stderr()
    finally:
        work.close()


@pytest.mark.parametrize("receiver_class", [GrpcReceiver, HttpReceiver],
                         ids=["grpc", "http"])
def test_otlp_endpoint_down_then_back(e2e_server: LocalServer,
                                      receiver_class: type[GrpcReceiver | HttpReceiver]
                                      ) -> None:
    target = target_name(e2e_server)
    receiver = receiver_class().up()
    env = agent_env(receiver, 300, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    try:
        with polling_agent(e2e_server.dsn(), env=env) as agent:
            agent.started()
            receiver.wait_for(lambda: receiver.latest_value(c.AGENT_UP.name,
                                                            target=target) == 1, 15, "up 1")
            receiver.wait_requests(3)
            rss_before = agent.rss_kb()

            receiver.down()
            polls_at_outage = agent.value(POLLS, target=target) or 0
            rss: list[int] = []
            outage_end = time.monotonic() + 5
            while time.monotonic() < outage_end:
                assert agent.proc.poll() is None, agent.stderr()
                rss.append(agent.rss_kb())
                time.sleep(0.25)
            # Polling never waits for the exporter.
            assert (agent.value(POLLS, target=target) or 0) >= polls_at_outage + 5
            assert agent.value(UP, target=target) == 1

            receiver.clear()
            receiver.up()
            receiver.wait_for(lambda: receiver.latest_value(c.AGENT_UP.name,
                                                            target=target) == 1,
                              20, "exports to resume")
            receiver.wait_requests(2)
            rss.append(agent.rss_kb())
            assert agent.proc.poll() is None
            grown_kb = max(rss) - rss_before
            assert grown_kb < 20_000, f"RSS grew {grown_kb} kB during a 5 s outage: {rss}"

            code, took = agent.stop()
            assert code == 0 and took < 5, (code, took)
            stderr = agent.stderr()
            assert "Traceback" not in stderr
            noisy = warnings_and_errors(agent)
            assert 1 <= len(noisy) <= 3, noisy
            assert all(r.get("msg") == "OTLP export failing" for r in noisy), noisy
    finally:
        receiver.down()


def test_unreachable_and_hung_targets_do_not_hold_back_the_good_one(
        e2e_server: LocalServer) -> None:
    good = target_name(e2e_server)
    refused_port = closed_port()
    with blackhole() as hung_port:
        refused = f"127.0.0.1:{refused_port}/postgres"
        hung = f"127.0.0.1:{hung_port}/postgres"
        with polling_agent(e2e_server.dsn(),
                           f"host=127.0.0.1 port={refused_port} user=postgres dbname=postgres",
                           f"host=127.0.0.1 port={hung_port} user=postgres dbname=postgres "
                           f"connect_timeout=2") as agent:
            agent.started()
            wait_until(lambda: agent.value(UP, target=good) == 1, 15, "good target up")
            wait_until(lambda: agent.value(UP, target=refused) == 0, 15, "refused target down")
            wait_until(lambda: (agent.value(ERRORS, target=refused, error="connect") or 0)
                       >= 2, 15, "connect errors to grow")
            # The hung target's poll runs into its connect timeout; its next polls are
            # skipped, not queued, and the good target keeps its pace meanwhile.
            wait_until(lambda: (agent.value(SKIPPED, target=hung) or 0) >= 1, 15,
                       "skipped polls of the hung target")
            polls, start = agent.value(POLLS, target=good) or 0, time.monotonic()
            wait_until(lambda: (agent.value(SKIPPED, target=hung) or 0) >= 3, 15,
                       "more skipped polls of the hung target")
            wait_until(lambda: agent.value(UP, target=hung) == 0, 15, "hung target down")
            # 0.5 s interval: the good target polls about twice a second meanwhile. At least
            # once a second leaves room for a loaded CI machine; had the hung target's 2 s
            # connect timeout held it up, it would poll about once every 2 s.
            wait_until(lambda: (agent.value(POLLS, target=good) or 0)
                       >= polls + 1.0 * (time.monotonic() - start), 2, "the good target's pace")
            assert agent.value(UP, target=good) == 1
            assert (agent.value(COUNT, target=good, application_name="pgconn-agent")) == 1
            samples = agent.samples()
            for dead in (refused, hung):
                assert not [n for n, lab, _ in samples
                            if n.startswith(SERVER_DATA) and lab.get("target") == dead]
                # Every error kind is exported from the first poll on (0 until it happens).
                kinds = {lab["error"] for n, lab, _ in samples
                         if n == ERRORS and lab.get("target") == dead}
                assert kinds == set(c.POLL_ERROR_KINDS)
            assert agent.value(ERRORS, target=good, error="connect") == 0
            assert agent.value(SKIPPED, target=good) == 0
            # One warning per failure streak and per skip streak, not one per poll.
            noisy = warnings_and_errors(agent)
            skips = [r for r in noisy if str(r.get("msg")).startswith("poll skipped")]
            assert [r.get("target") for r in skips] == [hung], noisy
            assert len(noisy) <= 8, noisy
            code, took = agent.stop()
            assert code == 0 and took < 5, (code, took, agent.stderr()[-2000:])
            assert "Traceback" not in agent.stderr()


def test_sigterm_flushes_a_last_export_and_exits_0(e2e_server: LocalServer) -> None:
    target = target_name(e2e_server)
    with HttpReceiver() as receiver:
        env = agent_env(receiver, 600_000)  # no periodic export: only the last one
        with polling_agent(e2e_server.dsn(), env=env) as agent:
            agent.started()
            wait_until(lambda: agent.value(UP, target=target) == 1, 15, "up 1")
            assert receiver.total == 0, "the periodic export should not have run yet"
            code, took = agent.stop()
            assert code == 0, agent.stderr()
            assert took < 5
            assert receiver.latest_value(c.AGENT_UP.name, target=target) == 1
            assert "Traceback" not in agent.stderr()
            assert any(r.get("msg") == "stopping" for r in agent.logs())


def test_sighup_adds_a_target_and_keeps_the_config_on_garbage(e2e_server: LocalServer,
                                                             tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    first = f'name = "first"\ndsn = "{e2e_server.dsn()}"\n'
    config.write_text(f'[agent]\ninterval = 0.5\nlisten = "127.0.0.1:0"\n\n'
                      f'[[targets]]\n{first}')

    def agent_pids(dbname: str) -> list[int]:
        return [r[0] for r in e2e_server.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgconn-agent' "
            f"AND datname = '{dbname}' ORDER BY pid")]

    with Agent(["--config", str(config)]) as agent:
        agent.started()
        wait_until(lambda: agent.value(UP, target="first") == 1, 15, "first target up")
        first_pids = wait_until(lambda: agent_pids("postgres"), 10, "the agent's connection")

        second_dsn = e2e_server.dsn(dbname="shop", password="hunter2")
        config.write_text(config.read_text()
                          + f'\n[[targets]]\nname = "second"\ndsn = "{second_dsn}"\n')
        agent.signal(signal.SIGHUP)
        wait_until(lambda: agent.value(UP, target="second") == 1, 15, "second target up")
        # The second target shares the first one's poll of the server and exports its database.
        wait_until(lambda: agent.value("postgresql_sessions_total", target="second",
                                       datname="shop", outcome="all") is not None,
                   15, "the second target's series")
        # The unchanged target kept its connection.
        assert agent_pids("postgres") == first_pids
        assert agent.value(UP, target="first") == 1

        config.write_text("[[targets]\nname = ")
        agent.signal(signal.SIGHUP)
        wait_until(lambda: [r for r in agent.logs() if r.get("level") == "error"
                            and "reload rejected" in str(r.get("msg"))], 10,
                   "the rejected reload's error")
        # One poll of the server serves both targets; its duration is recorded under "first".
        polls = agent.value(POLLS, target="first") or 0
        agent.wait_polls(polls + 2, 15, "the server still polled", target="first")
        assert agent.value(UP, target="first") == 1 and agent.value(UP, target="second") == 1
        assert agent_pids("postgres") == first_pids
        code, _ = agent.stop()
        assert code == 0
        stderr = agent.stderr()
        assert "hunter2" not in stderr
        assert "Traceback" not in stderr


def test_healthz_and_readyz(e2e_server: LocalServer) -> None:
    with polling_agent(e2e_server.dsn()) as agent:
        agent.started()
        assert agent.get("/healthz") == (200, "ok\n")
        wait_until(lambda: agent.get("/readyz")[0] == 200, 10, "/readyz 200")
        assert agent.get("/readyz") == (200, "ok\n")
        assert agent.value(UP) == 1
        assert agent.get("/nope")[0] == 404
        code, took = agent.stop()
        assert code == 0 and took < 5
