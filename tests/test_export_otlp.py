"""The whole metric contract over OTLP (gRPC and HTTP/protobuf), end to end.

A real server holds a known situation (workload helper), ``pgconn-agent run`` runs as a process
configured only by ``--dsn`` and the standard ``OTEL_*`` variables, and an OTLP receiver built
from opentelemetry-proto checks every metric of ``agent.contract.METRICS``: unit, instrument,
attribute names and the values the situation implies.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import certifi
import pytest
from agent_e2e import (
    BILLING_USER,
    IDLE_TX_TIMEOUT_S,
    MAX_CONNECTIONS,
    RESERVED,
    SHOP_APP,
    SHOP_DB,
    SHOP_DB_LIMIT,
    SHOP_USER,
    Agent,
    Situation,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from otlp_receiver import (
    CUMULATIVE,
    GrpcReceiver,
    HttpReceiver,
    PrivateCA,
    Receiver,
    agent_env,
    data_points,
    number,
)

from agent import __version__
from agent import contract as c
from agent.config import load
from agent.export import otel

SERVICE = "pgconn-agent-under-test"
HEADERS = "authorization=Bearer%20s3cret,x-tenant=acme"

PG_TARGET = c.POSTGRESQL_TARGET_METRICS
"""A PostgreSQL target's metrics: the contract without PgBouncer's."""


def otel_env(receiver: Receiver) -> dict[str, str]:
    return agent_env(receiver, 500, OTEL_EXPORTER_OTLP_HEADERS=HEADERS,
                     OTEL_SERVICE_NAME=SERVICE,
                     OTEL_RESOURCE_ATTRIBUTES="deployment.environment=e2e,host.name=test-host")


# Polls every 2 s: a new "opened" series is reported at 0 first and gets its count one poll
# later, and the late sessions must be opened between two polls.
POLL_INTERVAL = "2"


def run_agent(held: Situation, receiver: Receiver) -> Agent:
    return Agent(["--dsn", held.server.dsn(), "--listen", "", "--interval", POLL_INTERVAL],
                 env=otel_env(receiver)).started()


def _kind(metric: metrics_pb2.Metric) -> str:
    return metric.WhichOneof("data") or "none"


def check_contract(receiver: Receiver, held: Situation, late_app: str) -> None:
    """Every metric of the contract, its shape, and the situation's values."""
    target = held.target
    # One export holding every metric, with the late sessions counted as opened.
    def complete() -> bool:
        found = receiver.latest_metric(c.CONNECTION_OPENED.name)
        if found is None:
            return False
        names = {m.name for _, _, m in found[0].metrics()}
        opened = receiver.latest_value(c.CONNECTION_OPENED.name, application_name=late_app)
        return names >= {s.name for s in PG_TARGET} and opened == held.late[late_app]

    try:
        receiver.wait_for(complete, 20, "an export with every contract metric")
    except TimeoutError:
        last = receiver.received[-1] if receiver.received else None
        names = {m.name for _, _, m in last.metrics()} if last else set()
        pytest.fail(f"missing from the last export: {sorted({s.name for s in PG_TARGET} - names)}"
                    f"; opened: {receiver.latest_points(c.CONNECTION_OPENED.name)}")
    rec = receiver.latest_metric(c.CONNECTION_OPENED.name)
    assert rec is not None
    request = rec[0]

    # Resource, scope and transport.
    resources = [r for r, _, _ in request.metrics()]
    assert resources, "empty export"
    resource = resources[0]
    assert resource["service.name"] == SERVICE
    assert resource["service.version"] == __version__
    assert resource["deployment.environment"] == "e2e"
    assert resource["host.name"] == "test-host"
    assert uuid.UUID(resource["service.instance.id"]).version == 5
    scopes = {sm.scope.name for _, sm, _ in request.metrics()}
    assert scopes == {"pgconn-agent"}
    assert request.headers.get("authorization") == "Bearer s3cret"
    assert request.headers.get("x-tenant") == "acme"

    exported = {m.name: m for _, _, m in request.metrics()}
    assert set(exported) == {s.name for s in PG_TARGET}, "undeclared metric exported"
    for spec in PG_TARGET:
        metric = exported[spec.name]
        assert metric.unit == spec.unit, spec.name
        assert metric.description == spec.description, spec.name
        if spec.instrument is c.Instrument.GAUGE:
            assert _kind(metric) == "gauge", spec.name
        elif spec.instrument in (c.Instrument.COUNTER, c.Instrument.UPDOWNCOUNTER):
            assert _kind(metric) == "sum", spec.name
            assert metric.sum.is_monotonic is (spec.instrument is c.Instrument.COUNTER), \
                spec.name
            assert metric.sum.aggregation_temporality == CUMULATIVE, spec.name
        else:
            assert _kind(metric) == "histogram", spec.name
            assert metric.histogram.aggregation_temporality == CUMULATIVE
            for p in metric.histogram.data_points:
                assert tuple(p.explicit_bounds) == c.POLL_DURATION_BUCKETS
                assert len(p.bucket_counts) == len(c.POLL_DURATION_BUCKETS) + 1
                assert sum(p.bucket_counts) == p.count > 0
        points = list(data_points(metric))
        assert points, f"{spec.name}: no data points"
        for p in points:
            keys = sorted(kv.key for kv in p.attributes)
            assert keys == sorted(spec.attribute_names()), (spec.name, keys)
            assert {kv.key: kv.value.string_value for kv in p.attributes}["target"] == target

    def value(metric: str, /, **match: Any) -> float | None:
        return receiver.latest_value(metric, target=target, **match)

    def total(metric: str, /, **match: Any) -> float:
        return receiver.latest_sum(metric, target=target, **match)

    # Who holds the connections.
    for state, n in held.shop_states.items():
        assert value(c.CONNECTION_COUNT.name, state=state, **held.shop_group) == n, state
    assert value(c.CONNECTION_COUNT.name, **held.billing_group) == held.billing_idle
    assert value(c.CONNECTION_COUNT.name, application_name=late_app) == held.late[late_app]
    clients = held.client_backends()
    assert total(c.CONNECTION_COUNT.name) == clients
    assert value(c.BACKEND_COUNT.name, backend_type="client backend") == clients
    assert value(c.BACKEND_COUNT.name, backend_type="checkpointer") == 1
    assert value(c.CONNECTION_MAX.name) == MAX_CONNECTIONS
    assert value(c.CONNECTION_RESERVED.name) == RESERVED
    assert value(c.CONNECTION_UTILIZATION.name) == pytest.approx(clients / held.usable)

    # Ages: the idle-in-transaction sessions have open transactions, the idle ones do not.
    idle_tx = dict(held.shop_group, state="idle in transaction")
    assert (value(c.TRANSACTION_AGE_MAX.name, **idle_tx) or 0) > 0
    assert value(c.TRANSACTION_AGE_MAX.name, state="idle", **held.shop_group) is None
    assert (value(c.STATE_AGE_MAX.name, state="idle", **held.shop_group) or 0) > 0

    # The lock chain: holder (idle in transaction) <- waiter 1 (active) <- waiter 2 (active).
    waiting = {(a["locktype"], a["mode"]): number(p) for a, p in receiver.latest_points(
        c.LOCK_WAITING.name, target=target, application_name=SHOP_APP, datname=SHOP_DB)}
    assert waiting == {("transactionid", "ShareLock"): 1, ("tuple", "ExclusiveLock"): 1}
    assert (value(c.LOCK_WAIT_TIME_MAX.name, datname=SHOP_DB, application_name=SHOP_APP)
            or 0) > 0
    assert value(c.LOCK_BLOCKING.name, **idle_tx) == 1
    assert value(c.LOCK_BLOCKING.name, state="active", **held.shop_group) == 1
    assert total(c.CONNECTION_WAITING.name, application_name=SHOP_APP, usename=SHOP_USER,
                 wait_event_type="Lock") == len(held.waiter_pids)

    # Limits, settings, session counters.
    assert value(c.CONNECTION_LIMIT.name, scope="role", name=SHOP_USER) == 50
    assert value(c.CONNECTION_LIMIT.name, scope="database", name=SHOP_DB) == SHOP_DB_LIMIT
    assert value(c.CONNECTION_LIMIT.name, scope="role", name=BILLING_USER) is None
    assert value(c.SETTING.name, name="max_connections") == MAX_CONNECTIONS
    assert value(c.SETTING.name, name="superuser_reserved_connections") == RESERVED
    assert value(c.SETTING.name, name="idle_in_transaction_session_timeout") == \
        IDLE_TX_TIMEOUT_S
    outcomes = {a["outcome"] for a, _ in receiver.latest_points(
        c.SESSIONS.name, target=target, datname=SHOP_DB)}
    assert outcomes == set(c.SESSION_OUTCOMES)

    # The agent itself.
    assert value(c.AGENT_UP.name) == 1
    assert value(c.GROUPS_FOLDED.name) == 0
    assert value(c.SESSIONS_HIDDEN.name) == 0
    assert total(c.POLL_ERRORS.name) == 0
    assert (value(c.POLL_DURATION.name) or 0) >= 2


def exercise(receiver: Receiver, held: Situation, late_app: str) -> None:
    with receiver, run_agent(held, receiver) as agent:
        target = held.target
        receiver.wait_for(lambda: receiver.latest_value(c.AGENT_UP.name, target=target) == 1,
                          20, "up == 1")
        held.open_late(late_app, 3)
        try:
            check_contract(receiver, held, late_app)
        finally:
            code, took = agent.stop()
        assert code == 0, agent.stderr()
        assert took < 5
        assert "Traceback" not in agent.stderr()


def test_otlp_grpc_carries_the_whole_contract(held: Situation) -> None:
    exercise(GrpcReceiver(), held, "late-grpc")


def test_otlp_http_protobuf_carries_the_whole_contract(held: Situation) -> None:
    exercise(HttpReceiver(), held, "late-http")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_over_tls_configured_by_the_config_file(held: Situation, tmp_path: Path,
                                                     protocol: str) -> None:
    """The ``[otlp]`` section alone (no OTEL_* variables): TLS with a private CA, auth header,
    export interval."""
    ca = PrivateCA.create(tmp_path)
    receiver: Receiver = (GrpcReceiver(server_credentials=ca.grpc_credentials())
                          if protocol == "grpc" else HttpReceiver(ssl_context=ca.ssl_context()))
    config = tmp_path / "agent.toml"
    with receiver:
        config.write_text(f"""
[agent]
interval = 0.5
listen = ""

[otlp]
endpoint = "{receiver.endpoint}"
protocol = "{protocol}"
certificate = "{ca.ca}"
headers = {{ authorization = "Bearer from-config" }}
export_interval = 0.5

[[targets]]
name = "tls-target"
dsn = "{held.server.dsn()}"
""")
        # A CA bundle in the environment (common on corporate hosts) must not override the
        # configured collector CA.
        with Agent(["--config", str(config)],
                   env={"REQUESTS_CA_BUNDLE": certifi.where()}) as agent:
            agent.started()
            receiver.wait_for(lambda: receiver.latest_value(c.AGENT_UP.name,
                                                            target="tls-target") == 1,
                              20, "up 1 over TLS")
            for state, n in held.shop_states.items():
                assert receiver.latest_value(c.CONNECTION_COUNT.name, target="tls-target",
                                             state=state, **held.shop_group) == n
            assert receiver.received[-1].headers.get("authorization") == "Bearer from-config"
            code, _ = agent.stop()
            assert code == 0
            assert "Traceback" not in agent.stderr()


def test_service_instance_id_is_stable_per_agent_and_the_environment_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    config = load(None, {"dsns": ["host=db1"], "listen": "127.0.0.1:9188"})
    first = otel.resource(config).attributes["service.instance.id"]
    assert otel.resource(config).attributes["service.instance.id"] == first
    other = load(None, {"dsns": ["host=db1"], "listen": "127.0.0.1:9189"})
    assert otel.resource(other).attributes["service.instance.id"] != first
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7")
    assert otel.resource(config).attributes["service.instance.id"] == "pod-7"
