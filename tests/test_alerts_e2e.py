"""The alert rules on a real Prometheus, fed by ``pgconn-agent run`` during the composite incident.

A throwaway PostgreSQL 15 (max_connections 100, 3 reserved: 97 usable slots) holds it:
application ``shop-web`` holds 90 slots (80 idle, 6 idle in transaction, one of those the root of
a lock chain with 4 waiters queued on a row and its tuple lock); ``billing`` holds 4 idle
sessions over the unix socket. ``pgconn-agent run`` polls every second; Debian's Prometheus
scrapes it every second and evaluates the project's rules, rendered by
``agent.alert_rules.render_rules`` with the ``for:`` durations shortened, and the idle ages and
lock-wait count the incident would reach later lowered too, so every alert that one cause could
duplicate is armed. One alert per cause: exactly two fire, Exhausted naming the holder and
BlockedByIdleInTransaction carrying the root blocker's pid and its ``pg_terminate_backend``.
Takes about 30 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from agent_e2e import AGENT, Agent, wait_until
from prometheus_server import JOB, Prometheus

from agent import alert_rules
from agent.demo.server import LocalServer
from agent.demo.workload import Workload

APP, APP_ROLE = "shop-web", "shop"
OTHER_APP, OTHER_ROLE = "billing", "billing"
SHOP_IDLE, SHOP_IDLE_IN_TX, SHOP_WAITERS, OTHER_IDLE = 80, 5, 4, 4
# idle + idle in transaction + the lock chain's root (idle in transaction) and its waiters
SHOP_TOTAL = SHOP_IDLE + SHOP_IDLE_IN_TX + 1 + SHOP_WAITERS
USABLE = 100 - 3
MAX_ALERTS = 3

# Shortened by the test, not by a second copy of the rules: every ``for:`` to 1 s; the ages
# and counts below are reached now, so the alerts that only repeat a cause are armed and must be
# kept quiet by the rules themselves.
OVERRIDES: dict[str, float] = {
    **{t.name: 1 for t in alert_rules.THRESHOLDS if t.is_duration},
    "idle_hoarding_age_seconds": 2,
    "idle_in_transaction_warning_seconds": 2,
    "lock_waiting_sessions": 2,
}

HOLDER = {"application_name": APP, "client_addr": "127.0.0.1", "usename": APP_ROLE,
          "datname": "postgres"}
# (alertname, severity) -> the labels each firing alert must carry besides alertname/severity.
EXPECTED: dict[tuple[str, str], dict[str, str]] = {
    ("PostgreSQLConnectionsExhausted", "critical"): {},
    ("PostgreSQLBlockedByIdleInTransaction", "critical"): HOLDER,
}


@dataclass
class Incident:
    server: LocalServer
    agent: Agent
    root_pid: int
    prometheus: Prometheus  # the shipped rules
    mixin: Prometheus  # the same rules with a selector and grouping by job


MIXIN = alert_rules.Settings(selector=f'job="{JOB}"', group_by=("job",),
                             runbook_base="https://wiki.example/pgconn-runbooks")


@pytest.fixture(scope="module")
def incident() -> Iterator[Incident]:
    if not AGENT.exists():
        pytest.fail(f"{AGENT} is missing: run scripts/setup.sh")
    server = LocalServer(max_connections=100, superuser_reserved=3).start()
    work: Workload | None = None
    agent: Agent | None = None
    proms: list[Prometheus] = []
    try:
        server.execute(f"CREATE ROLE {APP_ROLE} LOGIN", f"CREATE ROLE {OTHER_ROLE} LOGIN",
                       f"GRANT CREATE ON SCHEMA public TO {APP_ROLE}")
        work = Workload(server.dsn(), unix_dsn=server.dsn(via="unix"))
        work.idle(SHOP_IDLE, APP, user=APP_ROLE)
        work.idle_in_transaction(SHOP_IDLE_IN_TX, APP, user=APP_ROLE)
        root_pid, _ = work.lock_chain(APP, SHOP_WAITERS, user=APP_ROLE)
        work.idle(OTHER_IDLE, OTHER_APP, via="unix", user=OTHER_ROLE)
        # Every ordinary slot but three is taken; the agent connects as a superuser, which is
        # what lets it keep watching a full server.
        agent = Agent(["--dsn", server.dsn(), "--listen", "127.0.0.1:0", "--interval", "1"])
        agent.started()
        wait_until(lambda: agent is not None and agent.value("pgconn_agent_up") == 1, 30,
                   "the agent's first successful poll")
        assert agent.listen
        for settings in (alert_rules.Settings(), MIXIN):
            proms.append(Prometheus([agent.listen],
                                    rules=alert_rules.render_rules(OVERRIDES, settings)))
        yield Incident(server, agent, root_pid, *proms)
    finally:
        for prometheus in proms:
            prometheus.stop()
        if agent is not None:
            agent.stop()
            agent.close()
        if work is not None:
            work.close()
        server.stop()


Firing = dict[tuple[str, str], list[dict[str, Any]]]


def _firing(prometheus: Prometheus) -> Firing:
    out: Firing = {}
    for alert in prometheus.alerts():
        if alert["state"] == "firing":
            key = (alert["labels"]["alertname"], alert["labels"]["severity"])
            out.setdefault(key, []).append(alert)
    return out


def _explain(incident: Incident, prometheus: Prometheus, firing: Any) -> str:
    return (f"firing: {json.dumps(firing, indent=1)[:6000]}\n"
            f"agent log:\n{incident.agent.stderr()[-2000:]}\n"
            f"prometheus log:\n{prometheus.log_text()[-2000:]}")


def _settled(incident: Incident, prometheus: Prometheus) -> Firing:
    """The firing alerts once the expected ones fire and, for 8 s, nothing else joins them
    (the agent-absent alert may fire for a moment before the first scrape; it must be gone)."""
    deadline = time.monotonic() + 120
    while not set(_firing(prometheus)) >= set(EXPECTED):
        if time.monotonic() > deadline:
            firing = _firing(prometheus)
            pytest.fail(f"missing: {sorted(set(EXPECTED) - set(firing))}\n"
                        + _explain(incident, prometheus, firing))
        time.sleep(1)
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < 8:
        firing = _firing(prometheus)
        if set(firing) != set(EXPECTED):
            if time.monotonic() > deadline:
                pytest.fail(f"unexpected: {sorted(set(firing) - set(EXPECTED))}, missing: "
                            f"{sorted(set(EXPECTED) - set(firing))}\n"
                            + _explain(incident, prometheus, firing))
            stable_since = time.monotonic()
        time.sleep(1)
    return firing


def _check_page(firing: Firing, root_pid: int, extra: dict[str, str], runbook_base: str
                ) -> None:
    assert sum(len(alerts) for alerts in firing.values()) <= MAX_ALERTS, firing
    target = firing[("PostgreSQLConnectionsExhausted", "critical")][0]["labels"]["target"]
    for key, labels in EXPECTED.items():
        (alert,) = firing[key]
        assert alert["labels"] == {"alertname": key[0], "severity": key[1], "target": target,
                                   **labels, **extra}, key
        annotations = alert["annotations"]
        assert annotations["runbook_url"] == f"{runbook_base}#{key[0].lower()}"
        assert "{{" not in annotations["summary"] + annotations["description"], annotations

    exhausted = firing[("PostgreSQLConnectionsExhausted", "critical")][0]["annotations"]
    assert exhausted["summary"].endswith(f"application_name {APP} holds {SHOP_TOTAL}"), exhausted
    assert f"for {USABLE} usable slots" in exhausted["description"], exhausted
    assert (f"Largest holder: application_name {APP} with {SHOP_TOTAL} connections, "
            f"{SHOP_IDLE} of them idle.") in exhausted["description"], exhausted
    # The page that matters carries the root blocker's pid and the statement that ends it; the
    # waiter in the middle of the tuple-lock queue is no root.
    blocked = firing[("PostgreSQLBlockedByIdleInTransaction", "critical")][0]
    assert float(blocked["value"]) == SHOP_WAITERS, blocked
    description = blocked["annotations"]["description"]
    assert (f"Root blocker: pid {root_pid} ({SHOP_WAITERS} queued behind it): "
            f"SELECT pg_terminate_backend({root_pid}).") in description, description
    assert (f"hold locks {SHOP_WAITERS} sessions queue behind ({SHOP_WAITERS} waiting for "
            f"locks in database postgres in all); {SHOP_IDLE_IN_TX + 1} of its sessions are "
            f"idle in transaction") in description, description


def test_the_incident_raises_one_alert_per_cause_with_the_pid(incident: Incident) -> None:
    firing = _settled(incident, incident.prometheus)
    _check_page(firing, incident.root_pid, {}, alert_rules.RUNBOOK_BASE)


def test_the_mixin_settings_select_group_and_link(incident: Incident) -> None:
    firing = _settled(incident, incident.mixin)
    _check_page(firing, incident.root_pid, {"job": JOB}, MIXIN.runbook_base)


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


def test_the_quiet_alerts_were_armed(incident: Incident) -> None:
    """What keeps the other alerts quiet is the rules' one-alert-per-cause, not the situation:
    their own conditions hold during the incident."""
    armed = {
        "near limit / holds most slots": "max(postgresql_connection_utilization_ratio) > 0.8",
        "idle in transaction": 'max by (application_name) (postgresql_connection_state_age_max'
                               '_seconds{state=~"idle in transaction.*"}) > 2',
        "idle hoarding": 'sum by (application_name, client_addr) (postgresql_connection_count'
                         '{state="idle"}) >= 20',
        "lock waits": "sum by (datname, application_name) (postgresql_lock_waiting) >= 2",
    }
    for what, expr in armed.items():
        assert incident.prometheus.until(expr, bool, timeout=60), what
