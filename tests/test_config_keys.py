"""Every key the config accepts changes what the agent does (issue 13: "every config key has an
effect").

The accepted keys are read off the parser itself, so a key added to ``agent/config.py`` fails
here until ``EFFECTS`` names the test that shows its effect. The ``[thresholds]`` keys come from
the spec and are shown here, one case each: the key moves a finding.
"""

from __future__ import annotations

import ast
import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_e2e import Agent, wait_until
from histories import churning, poll
from opentelemetry.sdk.resources import Resource
from otlp_receiver import GrpcReceiver
from pooler_snapshots import pooler
from snapshots import ConnectionLimit, group, session, snapshot

from agent import config as cfg
from agent import contract as c
from agent import spec
from agent.aggregate.attribution import attribute
from agent.collect.pgbouncer.snapshot import DatabaseStats, PoolerSnapshot
from agent.collect.snapshot import ActivityGroup
from agent.demo.server import LocalServer, free_port
from agent.demo.workload import Workload
from agent.diagnose.findings import Finding, diagnose
from agent.diagnose.pooler import pooler_findings
from agent.export.otel import otlp_enabled, otlp_exporter
from agent.export.producer import Producer
from agent.export.state import MetricsState

TESTS = Path(__file__).resolve().parent
HERE = "test_config_keys.py"
DAEMON = f"{HERE}::test_intervals_dimensions_and_log_level_reach_the_daemon"
OTLP_FILE = "test_export_otlp.py::test_otlp_over_tls_configured_by_the_config_file"
RELOAD = "test_daemon_stalls.py::test_reload_applies_listen_logging_otlp_and_a_lower_max_groups"
EFFECTS: dict[str, str] = {
    "agent.interval": DAEMON,
    "agent.max_groups": RELOAD,
    "agent.dimensions": DAEMON,
    "agent.log_format": RELOAD,
    "agent.log_level": DAEMON,
    "agent.show_queries": "test_core_integration.py::"
                          "test_show_queries_is_the_only_way_to_see_query_text",
    "agent.client_processes": "test_client_processes.py::"
                              "test_one_setting_turns_process_attribution_off",
    "agent.listen": RELOAD,
    "agent.web_config_file": "test_daemon_stalls.py::"
                             "test_reload_reads_the_web_config_file_again",
    "agent.targets_dir": "test_fleet_targets.py::"
                         "test_files_are_read_alone_and_followed_without_a_signal",
    "agent.shard": "test_fleet_targets.py::test_three_agents_poll_every_target_exactly_once",
    "otlp.enabled": f"{HERE}::test_otlp_enabled_overrides_the_endpoint_and_the_environment",
    "otlp.endpoint": OTLP_FILE,
    "otlp.protocol": OTLP_FILE,
    "otlp.headers": OTLP_FILE,
    "otlp.certificate": OTLP_FILE,
    "otlp.insecure": f"{HERE}::test_otlp_insecure_talks_plain_grpc",
    "otlp.export_interval": OTLP_FILE,
    "targets.dsn": OTLP_FILE,
    "targets.name": OTLP_FILE,
    "targets.password_file": "test_core_integration.py::test_wrong_password_is_an_auth_error",
    "targets.password_credential": "test_config.py::"
                                   "test_password_from_file_and_systemd_credential",
    "targets.interval": DAEMON,
    "targets.server": "test_fleet_targets.py::test_three_agents_poll_every_target_exactly_once",
    **{f"thresholds.{t.name}": f"{HERE}::test_each_threshold_moves_a_finding"
       for t in spec.DIAGNOSE_THRESHOLDS},
}
"""Each accepted key and the test that shows its effect (the test's source names the key, as a
TOML key, an ``[agent]`` override, an environment variable or a spec constant)."""


def accepted_keys(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every dotted key ``config.parse`` reads (``targets[0].x`` as ``targets.x``)."""
    seen: set[str] = set()
    get = cfg._Reader.get

    def recording(self: Any, name: str, kind: type, default: Any, *, secret: bool = False
                  ) -> Any:
        if self.path:  # the root's keys are the tables themselves
            seen.add(self.key(name).replace("[0]", ""))
        return get(self, name, kind, default, secret=secret)

    monkeypatch.setattr(cfg._Reader, "get", recording)
    cfg.parse({"otlp": {"export_interval": 10}, "targets": [{"dsn": ""}]}, "keys.toml")
    return seen


def _source(pointer: str) -> str:
    file, name = pointer.split("::")
    tree = ast.parse((TESTS / file).read_text("utf-8"))
    fn = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name),
              None)
    assert fn is not None, f"{pointer}: no such test"
    return ast.unparse(fn)


def test_every_accepted_key_has_a_test_of_its_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = accepted_keys(monkeypatch)
    assert {"agent.interval", "otlp.export_interval", "targets.dsn"} <= keys  # it finds them
    assert keys == set(EFFECTS), (keys - set(EFFECTS), set(EFFECTS) - keys)
    for key, pointer in EFFECTS.items():
        leaf = key.rsplit(".", 1)[1]
        assert leaf.lower() in _source(pointer).lower() or key.startswith("thresholds."), (
            f"{pointer} does not mention {leaf}")



def test_every_environment_variable_sets_an_accepted_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PGCONN_AGENT_*`` variables override ``[agent]`` keys (``DSN`` replaces the targets)."""
    keys = accepted_keys(monkeypatch)
    assert {f"agent.{key}" for key, _ in cfg._ENV.values() if key != "dsns"} <= keys

# --- [thresholds]: each key moves a finding ---------------------------------------------------

Scenario = Callable[[cfg.Thresholds], list[Finding]]


def instant(*groups: ActivityGroup, **snapshot_fields: Any) -> Scenario:
    a = attribute(snapshot(list(groups), **snapshot_fields))
    return lambda t: diagnose(a, t)


def churn_window() -> Scenario:
    """api opens 11.6 sessions/s that close again (``histories.churning``, as in test_history)."""
    h = churning()
    a = poll(5, 160, group("api", "idle", 1), group("api", "active", 2), group("web", "idle", 5))
    return lambda t: diagnose(a, t, h)


def waiting_pool_snapshot() -> PoolerSnapshot:
    """A PgBouncer pool with two clients waiting, the longest for 10 s."""
    s = pooler((), ())
    return replace(s, parts={**s.parts, "pools": (replace(s.pools[0], cl_waiting=2,
                                                           maxwait=10.0),)})


def waiting_pool() -> Scenario:
    s = waiting_pool_snapshot()
    return lambda t: pooler_findings(s, t)


def waiting_pool_between(now: tuple[float, float, float]) -> Scenario:
    """The same waiting pool polled twice a second apart, ``shop``'s SHOW STATS counters
    moving by 10 transactions of one query each; ``now``: the later poll's transaction, query
    and wait times (the earlier's: 10, 10, 5 s over 100 transactions)."""
    later = waiting_pool_snapshot()
    stats = DatabaseStats("shop", 100, 100, None, 0, 0, 10.0, 10.0, 5.0)
    earlier = replace(later, taken_at=later.taken_at - timedelta(seconds=1),
                      parts={**later.parts, "stats": (stats,)})
    xact_time, query_time, wait_time = now
    later = replace(later, parts={**later.parts, "stats": (replace(
        stats, total_xact_count=110, total_query_count=110, total_xact_time=xact_time,
        total_query_time=query_time, total_wait_time=wait_time),)})
    return lambda t: pooler_findings(later, t, earlier)


def busy(app: str, n: int, **kw: Any) -> ActivityGroup:
    return group(app, "active", n, state_age=0.0, **kw)


IDLE_TX = spec.State.IDLE_IN_TRANSACTION
CASES: dict[spec.Threshold, tuple[float, Callable[[], Scenario]]] = {
    # 82 of 97 usable slots: slots_high, gone at 0.9
    spec.UTILIZATION_WARNING: (0.9, lambda: instant(busy("a", 40), busy("b", 42, addr="x"))),
    # 95 of 97: slots_exhausted, only slots_high at 0.99
    spec.UTILIZATION_CRITICAL: (0.99, lambda: instant(busy("a", 47), busy("b", 48, addr="x"))),
    # one application with 55 of 97: dominant, not at 0.6
    spec.HOLDER_SHARE: (0.6, lambda: instant(busy("a", 55))),
    # 12 connections idle for 90 s: hoarding, not from 20 connections or 120 s
    spec.IDLE_HOARD_COUNT: (20, lambda: instant(group("a", "idle", 12, state_age=90.0))),
    spec.IDLE_HOARD_AGE: (120.0, lambda: instant(group("a", "idle", 12, state_age=90.0))),
    # a transaction idle for 90 s: a warning; none from 120 s, critical from 80 s
    spec.IDLE_IN_TRANSACTION_WARNING: (120.0, lambda: instant(
        group("a", IDLE_TX), sessions=(session(7, app="a", state=IDLE_TX, state_age=90.0),))),
    spec.IDLE_IN_TRANSACTION_CRITICAL: (80.0, lambda: instant(
        group("a", IDLE_TX), sessions=(session(7, app="a", state=IDLE_TX, state_age=90.0),))),
    # a transaction open 350 s while its session works
    spec.LONG_TRANSACTION: (400.0, lambda: instant(group("a", "active", xact_age=350.0))),
    # 25 connections opened in the last minute: a burst, not from 30
    spec.CHURN_YOUNG: (30, lambda: instant(group("a", "idle", 3, young=25))),
    spec.CHURN_RATE: (20.0, churn_window),
    # 9 of a role's 10: near its limit, not at 0.95
    spec.LIMIT_SHARE: (0.95, lambda: instant(group(count=9), limits=(
        ConnectionLimit("role", "shop_app", 10, 9),))),
    spec.POOL_WAIT_CRITICAL: (20.0, waiting_pool),
    # 10 queries ran 0.3 s each on the server (waits taken out), 4.1 times their 73 ms since
    # PgBouncer started: the server got slow; the pool is too small from 5 times
    spec.POOL_QUERY_SLOWDOWN: (5.0, lambda: waiting_pool_between((18.0, 18.0, 10.0))),
    # transactions held 0.25 s, 0.1 s of it in their query: 60 % idle in transaction; the
    # pool is too small from 70 %
    spec.POOL_IDLE_IN_TRANSACTION: (0.7, lambda: waiting_pool_between((17.5, 16.0, 10.0))),
}


def outcome(found: list[Finding]) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted((f.code, str(f.severity), (*f.data.get("causes", ()),
                                              f.data.get("stats", {}).get("cause", "")))
                  for f in found)


def test_every_threshold_has_a_case() -> None:
    assert set(CASES) == set(spec.DIAGNOSE_THRESHOLDS)


@pytest.mark.parametrize("threshold", spec.DIAGNOSE_THRESHOLDS, ids=lambda t: t.name)
def test_each_threshold_moves_a_finding(threshold: spec.Threshold) -> None:
    value, scenario = CASES[threshold]
    run = scenario()
    parsed = cfg.parse({"thresholds": {threshold.name: value}}, "test.toml").thresholds
    default, changed = outcome(run(cfg.Thresholds())), outcome(run(parsed))
    assert default, "the scenario finds nothing at the defaults"
    assert default != changed, f"{threshold.name} = {value} changed nothing"
    for other in spec.DIAGNOSE_THRESHOLDS:  # the key moved only itself
        assert parsed[other] == (value if other is threshold else other.default)


# --- keys without an end-to-end test elsewhere ------------------------------------------------

def test_otlp_enabled_overrides_the_endpoint_and_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon pushes over OTLP exactly when ``otlp_enabled`` says so."""
    def enabled(**otlp: Any) -> bool:
        return otlp_enabled(cfg.parse({"otlp": otlp}, "test.toml").otlp)

    monkeypatch.delenv("OTEL_METRICS_EXPORTER", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert enabled() and not enabled(enabled=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert enabled(endpoint="http://c:4317") and not enabled(endpoint="http://c:4317",
                                                              enabled=False)
    assert not enabled() and enabled(enabled=True)


def test_otlp_insecure_talks_plain_grpc() -> None:
    """An endpoint without a scheme means TLS to the gRPC exporter unless ``insecure``."""
    data = Producer(MetricsState(), Resource.create()).get_metrics_data()
    with GrpcReceiver() as receiver:
        otlp = cfg.parse({"otlp": {"endpoint": f"127.0.0.1:{receiver.port}", "protocol": "grpc",
                                   "insecure": True}}, "test.toml").otlp
        assert otlp_exporter(otlp).export(data, timeout_millis=5000).name == "SUCCESS"
        assert len(receiver.received) == 1


@pytest.fixture
def held(e2e_server: LocalServer) -> Iterator[Workload]:
    with Workload(e2e_server.dsn()) as work:
        work.idle(2, "keys-app")
        yield work


def test_intervals_dimensions_and_log_level_reach_the_daemon(
        e2e_server: LocalServer, held: Workload, tmp_path: Path) -> None:
    """``fast`` polls at the [agent] interval, ``slow`` at its own; series carry only the
    configured dimensions; ``log_level = "warning"`` drops the info lines until a reload
    turns them back on. About 4 s."""
    polls = c.POLL_DURATION.prometheus_name + "_count"
    listen = f"127.0.0.1:{free_port()}"

    def write(level: str) -> None:
        config.write_text(
            f'[agent]\ninterval = 0.3\nlisten = "{listen}"\nlog_format = "json"\n'
            f'log_level = "{level}"\ndimensions = ["application_name", "state"]\n\n'
            f'[[targets]]\nname = "fast"\nserver = "fast"\ndsn = "{e2e_server.dsn()}"\n\n'
            f'[[targets]]\nname = "slow"\nserver = "slow"\ndsn = "{e2e_server.dsn()}"\n'
            "interval = 60\n")

    config = tmp_path / "agent.toml"
    write("warning")
    with Agent(["--config", str(config)], log_format=None) as agent:
        agent.listen = listen
        wait_until(lambda: (agent.value(polls, target="fast") or 0) >= 6
                   and agent.value(polls, target="slow"), 15, "six polls of fast")
        assert agent.value(polls, target="slow") == 1
        count = c.CONNECTION_COUNT.prometheus_name
        labels = [lab for n, lab, _ in agent.samples() if n == count and lab["target"] == "fast"]
        assert {"application_name": "keys-app", "state": "idle", "target": "fast"} in labels
        assert all(set(lab) == {"target", "application_name", "state"} for lab in labels)
        levels = {json.loads(line)["level"] for line in agent.stderr().splitlines()}
        assert "info" not in levels, levels

        write("info")
        agent.signal(signal.SIGHUP)
        wait_until(lambda: any(r.get("msg") == "configuration reloaded" for r in agent.logs()),
                   10, "the reload, logged at info")
