"""The metric contract is the public interface: names, units and attributes are pinned here."""

from __future__ import annotations

from pathlib import Path

from agent import contract as c
from agent.docs import metrics_markdown

G = ["datname", "usename", "application_name", "client_addr", "state"]

# The Prometheus column of the contract table in the daemon issue, verbatim.
EXPECTED = {
    "postgresql.connection.count": ("postgresql_connection_count", ["target", *G]),
    "postgresql.connection.max": ("postgresql_connection_max", ["target"]),
    "postgresql.connection.reserved": ("postgresql_connection_reserved", ["target"]),
    "postgresql.connection.utilization": ("postgresql_connection_utilization_ratio", ["target"]),
    "postgresql.connection.state_age.max": ("postgresql_connection_state_age_max_seconds",
                                            ["target", *G]),
    "postgresql.transaction.age.max": ("postgresql_transaction_age_max_seconds", ["target", *G]),
    "postgresql.connection.waiting": ("postgresql_connection_waiting",
                                      ["target", "datname", "usename", "application_name",
                                       "wait_event_type", "wait_event"]),
    "postgresql.lock.waiting": ("postgresql_lock_waiting",
                                ["target", "datname", "application_name", "locktype", "mode"]),
    "postgresql.lock.wait_time.max": ("postgresql_lock_wait_time_max_seconds",
                                      ["target", "datname", "application_name"]),
    "postgresql.lock.blocking": ("postgresql_lock_blocking", ["target", *G]),
    "postgresql.backend.count": ("postgresql_backend_count", ["target", "backend_type"]),
    "postgresql.connection.limit": ("postgresql_connection_limit", ["target", "scope", "name"]),
    "postgresql.sessions": ("postgresql_sessions_total", ["target", "datname", "outcome"]),
    "postgresql.connection.opened": ("postgresql_connection_opened_total",
                                     ["target", "application_name", "client_addr"]),
    "postgresql.setting": ("postgresql_setting", ["target", "name"]),
    "postgresql.connection.open_rate": ("postgresql_connection_open_rate_per_second",
                                        ["target", "datname", "application_name",
                                         "client_addr"]),
    "pgconn_agent.up": ("pgconn_agent_up", ["target"]),
    "pgconn_agent.poll.duration": ("pgconn_agent_poll_duration_seconds", ["target"]),
    "pgconn_agent.poll.errors": ("pgconn_agent_poll_errors_total", ["target", "error"]),
    "pgconn_agent.groups.folded": ("pgconn_agent_groups_folded", ["target"]),
    "pgconn_agent.sessions.hidden": ("pgconn_agent_sessions_hidden", ["target"]),
    "pgconn_agent.poll.skipped": ("pgconn_agent_poll_skipped_total", ["target"]),
}


def test_contract_matches_the_published_table() -> None:
    assert {m.name for m in c.METRICS} == set(EXPECTED)
    for spec in c.METRICS:
        prom, attrs = EXPECTED[spec.name]
        assert spec.prometheus_name == prom, spec.name
        assert list(spec.attribute_names()) == attrs, spec.name


def test_prometheus_translation_rules() -> None:
    assert c.prometheus_name("a.b", "s", c.Instrument.GAUGE) == "a_b_seconds"
    assert c.prometheus_name("a.b", "1", c.Instrument.GAUGE) == "a_b_ratio"
    assert c.prometheus_name("a.b", "{thing}", c.Instrument.COUNTER) == "a_b_total"
    assert c.prometheus_name("a.b", "By", c.Instrument.GAUGE) == "a_b_bytes"
    assert c.prometheus_name("a.b_seconds", "s", c.Instrument.HISTOGRAM) == "a_b_seconds"
    assert c.prometheus_name("a.rate", "{thing}/s", c.Instrument.GAUGE) == "a_rate_per_second"


def test_dropping_a_dimension_removes_it_from_g() -> None:
    dims = ("datname", "application_name", "state")
    assert c.CONNECTION_COUNT.attribute_names(dims) == ("target", *dims)


def test_docs_metrics_md_is_generated_from_the_contract() -> None:
    committed = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    assert committed == metrics_markdown(), "run: .venv/bin/python -m agent.docs > docs/metrics.md"
