"""PgconnAgentPollsStalled on a real Prometheus: the agent's backend stops answering.

``pgconn-agent run`` polls a real PostgreSQL every second; its own backend is stopped with
SIGSTOP (the TCP connection stays open, nothing answers). Whether the agent gives up on the
client side (``up 0`` with ``timeout`` errors) or its next polls are skipped behind the hung one,
the stall pages as PgconnAgentPollsStalled and not also as PgconnAgentTargetDown. Takes about
20 s.
"""

from __future__ import annotations

import time

import pytest
from agent_e2e import Agent, stopped, wait_until
from prometheus_server import Prometheus

from agent import alert_rules
from agent import contract as c
from agent.demo.server import LocalServer

OVERRIDES = {t.name: 1 for t in alert_rules.THRESHOLDS if t.is_duration}


def _firing(prometheus: Prometheus) -> dict[str, dict[str, str]]:
    return {a["labels"]["alertname"]: a["labels"] for a in prometheus.alerts()
            if a["state"] == "firing"}


def test_a_stalled_target_pages_as_stalled_not_down() -> None:
    with LocalServer(max_connections=20, superuser_reserved=3) as server:
        agent = Agent(["--dsn", server.dsn(), "--listen", "127.0.0.1:0", "--interval", "1"])
        try:
            agent.started()
            wait_until(lambda: agent.value(c.AGENT_UP.prometheus_name) == 1, 30,
                       "the agent's first successful poll")
            assert agent.listen
            prometheus = Prometheus([agent.listen],
                                    rules=alert_rules.render_rules(OVERRIDES))
            try:
                prometheus.until(f"{c.AGENT_UP.prometheus_name} == 1", bool, timeout=30)
                (backend,) = server.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = "
                    f"'{c.AGENT_APPLICATION_NAME}'")
                with stopped(int(backend[0])):
                    deadline = time.monotonic() + 90
                    while "PgconnAgentPollsStalled" not in (firing := _firing(prometheus)):
                        if time.monotonic() > deadline:
                            pytest.fail(f"not stalled: {firing}\n{agent.stderr()[-2000:]}")
                        time.sleep(1)
                    assert firing["PgconnAgentPollsStalled"]["severity"] == "critical"
                    assert "target" in firing["PgconnAgentPollsStalled"]
                    assert "PgconnAgentTargetDown" not in firing, firing
            finally:
                prometheus.stop()
        finally:
            agent.stop()
            agent.close()
