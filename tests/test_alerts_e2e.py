"""The alert rules on a real Prometheus, fed by ``pgconn-agent run`` during "100/100 with one user".

A throwaway PostgreSQL 15 (max_connections 100, 3 reserved: 97 usable slots) holds the
incident: application ``shop-web`` fills it with idle sessions, sessions idle in transaction
and a lock chain whose root is idle in transaction; ``billing`` holds a few idle sessions over
the unix socket. ``pgconn-agent run`` polls every second; Debian's Prometheus scrapes it every
second and evaluates the project's rules, rendered by ``agent.alert_rules.render_rules`` with
the ``for:`` durations (and the two age thresholds) shortened by this test. The alerts API must
show exactly the incident's alerts firing, each naming shop-web, and none of the others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from agent_e2e import AGENT, Agent, wait_until
from prometheus_server import Prometheus

from agent import alert_rules
from agent.pgserver import LocalServer
from agent.workload import Workload

APP, APP_ROLE = "shop-web", "shop"
OTHER_APP, OTHER_ROLE = "billing", "billing"
SHOP_IDLE, SHOP_IDLE_IN_TX, SHOP_WAITERS, OTHER_IDLE = 80, 5, 6, 4
# idle + idle in transaction + the lock chain's root (idle in transaction) and its waiters
SHOP_TOTAL = SHOP_IDLE + SHOP_IDLE_IN_TX + 1 + SHOP_WAITERS
USABLE = 100 - 3

# Shortened by the test, not by a second copy of the rules: every ``for:`` to 1 s, and the two
# age thresholds the incident cannot reach in a test's lifetime.
OVERRIDES: dict[str, float] = {
    **{t.name: 1 for t in alert_rules.THRESHOLDS if t.is_duration},
    "idle_hoarding_age_seconds": 2,
    "idle_in_transaction_warning_seconds": 2,
}

# (alertname, severity) -> the labels each firing alert must carry besides alertname/severity.
EXPECTED: dict[tuple[str, str], dict[str, str]] = {
    ("PostgreSQLConnectionsNearLimit", "warning"): {},
    ("PostgreSQLConnectionsExhausted", "critical"): {},
    ("PostgreSQLApplicationHoldsMostSlots", "warning"): {"application_name": APP},
    ("PostgreSQLApplicationHostHoldsMostSlots", "warning"): {
        "application_name": APP, "client_addr": "127.0.0.1"},
    ("PostgreSQLIdleConnectionHoarding", "warning"): {
        "application_name": APP, "client_addr": "127.0.0.1"},
    ("PostgreSQLIdleInTransaction", "warning"): {
        "application_name": APP, "client_addr": "127.0.0.1", "usename": APP_ROLE,
        "datname": "postgres"},
    ("PostgreSQLLockWaitsPilingUp", "warning"): {"application_name": APP, "datname": "postgres"},
    ("PostgreSQLBlockedByIdleInTransaction", "critical"): {
        "application_name": APP, "client_addr": "127.0.0.1", "usename": APP_ROLE,
        "datname": "postgres"},
}


@dataclass
class Incident:
    server: LocalServer
    agent: Agent
    prometheus: Prometheus


@pytest.fixture(scope="module")
def incident() -> Iterator[Incident]:
    if not AGENT.exists():
        pytest.fail(f"{AGENT} is missing: run scripts/setup.sh")
    server = LocalServer(max_connections=100, superuser_reserved=3).start()
    work: Workload | None = None
    agent: Agent | None = None
    prometheus: Prometheus | None = None
    try:
        server.execute(f"CREATE ROLE {APP_ROLE} LOGIN", f"CREATE ROLE {OTHER_ROLE} LOGIN",
                       f"GRANT CREATE ON SCHEMA public TO {APP_ROLE}")
        work = Workload(server.dsn(), unix_dsn=server.dsn(via="unix"))
        work.idle(SHOP_IDLE, APP, user=APP_ROLE)
        work.idle_in_transaction(SHOP_IDLE_IN_TX, APP, user=APP_ROLE)
        work.lock_chain(APP, SHOP_WAITERS, user=APP_ROLE)
        work.idle(OTHER_IDLE, OTHER_APP, via="unix", user=OTHER_ROLE)
        # Every ordinary slot but one is taken; the agent connects as a superuser, which is
        # what lets it keep watching a full server.
        agent = Agent(["--dsn", server.dsn(), "--listen", "127.0.0.1:0", "--interval", "1"])
        agent.started()
        wait_until(lambda: agent is not None and agent.value("pgconn_agent_up") == 1, 30,
                   "the agent's first successful poll")
        assert agent.listen
        prometheus = Prometheus([agent.listen], rules=alert_rules.render_rules(OVERRIDES))
        yield Incident(server, agent, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if agent is not None:
            agent.stop()
            agent.close()
        if work is not None:
            work.close()
        server.stop()


def _firing(prometheus: Prometheus) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for alert in prometheus.alerts():
        if alert["state"] == "firing":
            key = (alert["labels"]["alertname"], alert["labels"]["severity"])
            out.setdefault(key, []).append(alert)
    return out


def _explain(incident: Incident, firing: Any) -> str:
    return (f"firing: {json.dumps(firing, indent=1)[:6000]}\n"
            f"agent log:\n{incident.agent.stderr()[-2000:]}\n"
            f"prometheus log:\n{incident.prometheus.log_text()[-2000:]}")


def test_the_incident_fires_exactly_its_alerts_naming_the_holder(incident: Incident) -> None:
    prometheus = incident.prometheus
    deadline = time.monotonic() + 120
    while True:
        firing = _firing(prometheus)
        if set(firing) >= set(EXPECTED):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"missing: {sorted(set(EXPECTED) - set(firing))}\n"
                        + _explain(incident, firing))
        time.sleep(1)

    # Stable for a while: the expected ones keep firing and nothing else joins them (the
    # agent-absent alert may fire for a moment before the first scrape; it must be gone).
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < 8:
        firing = _firing(prometheus)
        if set(firing) != set(EXPECTED):
            if time.monotonic() > deadline:
                pytest.fail(f"unexpected: {sorted(set(firing) - set(EXPECTED))}, missing: "
                            f"{sorted(set(EXPECTED) - set(firing))}\n"
                            + _explain(incident, firing))
            stable_since = time.monotonic()
        time.sleep(1)

    target = next(iter(firing[("PostgreSQLConnectionsExhausted", "critical")]))["labels"][
        "target"]
    for key, labels in EXPECTED.items():
        alerts = firing[key]
        assert len(alerts) == 1, (key, alerts)
        got = alerts[0]["labels"]
        assert got == {"alertname": key[0], "severity": key[1], "target": target, **labels}, key
        assert got.get("application_name", APP) == APP
        annotations = alerts[0]["annotations"]
        assert annotations["runbook_url"].endswith("#" + key[0].lower())
        assert "{{" not in annotations["summary"] + annotations["description"], annotations

    def description(name: str, severity: str) -> str:
        return str(firing[(name, severity)][0]["annotations"]["description"])

    # The page names the application, how many of how many slots, and how many are idle.
    exhausted = description("PostgreSQLConnectionsExhausted", "critical")
    assert f"for {USABLE} usable slots" in exhausted, exhausted
    assert (f"Largest holder: application_name {APP} with {SHOP_TOTAL} connections, "
            f"{SHOP_IDLE} of them idle.") in exhausted, exhausted
    holds = description("PostgreSQLApplicationHoldsMostSlots", "warning")
    assert holds.startswith(f"application_name {APP} holds {SHOP_TOTAL} of {USABLE} usable "
                            f"slots"), holds
    assert f"{SHOP_IDLE} of them are idle and {SHOP_IDLE_IN_TX + 1} idle in transaction" \
        in holds, holds
    assert f"Largest hosts: 127.0.0.1 ({SHOP_TOTAL})" in holds, holds
    # The root blocks the first waiter directly; the other waiters queue behind that one.
    blocked = firing[("PostgreSQLBlockedByIdleInTransaction", "critical")][0]
    assert float(blocked["value"]) == 1, blocked
    assert (f"hold locks others wait for: 1 directly, {SHOP_WAITERS} waiting for locks in "
            f"database postgres in all") in blocked["annotations"]["description"], blocked
    waits = firing[("PostgreSQLLockWaitsPilingUp", "warning")][0]
    assert float(waits["value"]) == SHOP_WAITERS, waits
    hoarding = firing[("PostgreSQLIdleConnectionHoarding", "warning")][0]
    assert float(hoarding["value"]) == SHOP_IDLE, hoarding


def test_rules_are_loaded_unchanged_apart_from_the_overrides(incident: Incident) -> None:
    groups = incident.prometheus.api("rules")["groups"]
    loaded = {(r["name"], r["labels"]["severity"]): r for g in groups for r in g["rules"]}
    expected = {(r["alert"], r["labels"]["severity"]): r
                for g in alert_rules.rule_groups(OVERRIDES) for r in g["rules"]}
    assert set(loaded) == set(expected)
    for key, rule in loaded.items():
        assert rule["duration"] == 1, key
        assert rule["health"] == "ok", (key, rule.get("lastError"))
        assert rule["annotations"] == expected[key]["annotations"], key
