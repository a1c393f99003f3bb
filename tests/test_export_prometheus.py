"""The pull endpoint serves the contract's Prometheus names, and a real Prometheus scrapes it.

``pgconn-agent run --listen`` runs as a process against a real server holding a known
situation; ``/metrics`` is parsed with prometheus_client's parser, then Debian's ``prometheus``
(installed by scripts/setup.sh) scrapes it every second and PromQL answers are checked.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_e2e import (
    MAX_CONNECTIONS,
    RESERVED,
    SHOP_APP,
    SHOP_DB,
    SHOP_DB_LIMIT,
    Agent,
    Situation,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import JOB, Prometheus

from agent import contract as c

LATE_APP = "late-prom"
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                  "scrape_samples_post_metric_relabeling", "scrape_series_added"}

PG_TARGET = c.POSTGRESQL_TARGET_METRICS
"""A PostgreSQL target's metrics: the contract without PgBouncer's."""


def sample_names(spec: c.MetricSpec) -> set[str]:
    name = spec.prometheus_name
    if spec.instrument is c.Instrument.HISTOGRAM:
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


@pytest.fixture(scope="module")
def agent(held: Situation) -> Iterator[Agent]:
    with Agent(["--dsn", held.server.dsn(), "--listen", "127.0.0.1:0",
                "--interval", "2"]) as proc:  # see test_export_otlp.POLL_INTERVAL
        proc.started()
        wait_until(lambda: proc.value("pgconn_agent_up") == 1, 20, "pgconn_agent_up 1")
        held.open_late(LATE_APP, 3)
        wait_until(lambda: proc.value("postgresql_connection_opened_total",
                                      application_name=LATE_APP) == 3,
                   20, "the late sessions counted as opened")
        yield proc
        code, _ = proc.stop()
        assert code == 0, proc.stderr()
        assert "Traceback" not in proc.stderr()


def test_metrics_endpoint_serves_exactly_the_contract(agent: Agent, held: Situation) -> None:
    code, body = agent.get("/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    by_sample = {spec.prometheus_name: spec for spec in c.METRICS}
    seen: set[str] = set()
    for family in families.values():
        samples = {s.name for s in family.samples}
        # Counters: the parser strips _total from the family name; the samples keep it.
        name = family.name + "_total" if family.type == "counter" else family.name
        spec = by_sample.get(name)
        assert spec is not None, f"/metrics serves {family.name!r}, not in the contract"
        seen.add(spec.name)
        assert family.type == spec.instrument.prometheus_type, spec.name
        assert samples <= sample_names(spec), (spec.name, samples)
        if spec.instrument is c.Instrument.HISTOGRAM:
            assert samples == sample_names(spec)
        for s in family.samples:
            labels = set(s.labels) - ({"le"} if s.name.endswith("_bucket") else set())
            assert labels == set(spec.attribute_names()), (s.name, sorted(labels))
            assert not any(k.startswith("otel_scope") for k in s.labels), s
    assert seen == {spec.name for spec in PG_TARGET}, "contract metrics missing from /metrics"
    assert "target_info" not in body and "otel_scope_" not in body

    target = held.target
    buckets = [s for s in families[c.POLL_DURATION.prometheus_name].samples
               if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == \
        [*(repr(float(b)) for b in c.POLL_DURATION_BUCKETS), "+Inf"]
    assert agent.value("postgresql_connection_max", target=target) == MAX_CONNECTIONS
    assert agent.value("postgresql_connection_reserved", target=target) == RESERVED
    for state, n in held.shop_states.items():
        assert agent.value("postgresql_connection_count", state=state, **held.shop_group) == n


@pytest.fixture(scope="module")
def prometheus(agent: Agent) -> Iterator[Prometheus]:
    assert agent.listen
    prom = Prometheus([agent.listen])
    try:
        yield prom
    finally:
        prom.stop()


def by(label: str, result: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {m.get(label, ""): v for m, v in result}


def test_prometheus_scrapes_the_agent(prometheus: Prometheus, held: Situation,
                                      agent: Agent) -> None:
    target = held.target
    up = prometheus.until('pgconn_agent_up', lambda r: r[0][1] == 1)
    assert [m for m, _ in up] == [{"__name__": "pgconn_agent_up", "target": target,
                                   "job": JOB, "instance": agent.listen}]
    # The scrape itself is healthy.
    prometheus.until(f'up{{job="{JOB}"}}', lambda r: r[0][1] == 1)

    states = prometheus.until(
        f'sum by (state) (postgresql_connection_count{{application_name="{SHOP_APP}"}})',
        lambda r: by("state", r) == held.shop_states)
    assert by("state", states) == held.shop_states

    clients = held.client_backends()
    util = prometheus.until("postgresql_connection_utilization_ratio",
                            lambda r: abs(r[0][1] - clients / held.usable) < 1e-9)
    assert util[0][0]["target"] == target
    prometheus.until("sum(postgresql_connection_count)", lambda r: r[0][1] == clients)
    prometheus.until('postgresql_backend_count{backend_type="client backend"}',
                     lambda r: r[0][1] == clients)
    prometheus.until("postgresql_connection_max", lambda r: r[0][1] == MAX_CONNECTIONS)
    prometheus.until("postgresql_connection_reserved", lambda r: r[0][1] == RESERVED)
    prometheus.until(f'sum(postgresql_lock_waiting{{application_name="{SHOP_APP}"}})',
                     lambda r: r[0][1] == 2)
    prometheus.until('sum by (state) (postgresql_lock_blocking)',
                     lambda r: by("state", r) == {"idle in transaction": 1, "active": 1})
    prometheus.until(f'postgresql_connection_limit{{scope="database",name="{SHOP_DB}"}}',
                     lambda r: r[0][1] == SHOP_DB_LIMIT)
    prometheus.until(f'postgresql_connection_opened_total{{application_name="{LATE_APP}"}}',
                     lambda r: r[0][1] == 3)
    prometheus.until('postgresql_transaction_age_max_seconds{state="idle in transaction",'
                     f'application_name="{SHOP_APP}"}} > 0', lambda r: len(r) == 1)
    prometheus.until('sum(pgconn_agent_poll_errors_total)', lambda r: r[0][1] == 0)
    # Second-scale buckets make the histogram usable: a poll of a small server is well
    # under a second, and more than nothing.
    p50 = prometheus.until(
        "histogram_quantile(0.5, sum by (le) (rate(pgconn_agent_poll_duration_seconds_bucket"
        "[5s])))", lambda r: 0 < r[0][1] < 1)
    assert 0 < p50[0][1] < 1

    # Every series Prometheus stored from the agent carries a contract name.
    names = prometheus.until(f'group by (__name__) ({{job="{JOB}"}})',
                             lambda r: len(r) >= len(PG_TARGET))
    stored = {m["__name__"] for m, _ in names} - PROMETHEUS_OWN
    expected = set().union(*(sample_names(s) for s in PG_TARGET))
    assert stored == expected
