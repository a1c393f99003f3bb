"""The metric contract is the public interface: names, units and attributes are pinned here."""

from __future__ import annotations

import pytest

from agent import contract as c

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
    "postgresql.lock.root_blocking": ("postgresql_lock_root_blocking", ["target", *G]),
    "postgresql.lock.root_blocker": ("postgresql_lock_root_blocker", ["target", "pid", *G]),
    # PgBouncer targets (issue 12).
    "pgbouncer.pool.clients": ("pgbouncer_pool_clients", ["target", "database", "user", "state"]),
    "pgbouncer.pool.servers": ("pgbouncer_pool_servers", ["target", "database", "user", "state"]),
    "pgbouncer.pool.wait.max": ("pgbouncer_pool_wait_max_seconds", ["target", "database", "user"]),
    "pgbouncer.pool.size": ("pgbouncer_pool_size", ["target", "database", "user", "pool_mode"]),
    "pgbouncer.database.connection.max": ("pgbouncer_database_connection_max",
                                          ["target", "database"]),
    "pgbouncer.client.max": ("pgbouncer_client_max", ["target"]),
    "pgbouncer.client.count": ("pgbouncer_client_count",
                               ["target", "application_name", "client_addr", "user", "database",
                                "state"]),
    # PgBouncer's SHOW STATS: counters per database (names pinned like the ones above).
    **{f"pgbouncer.database.{name}": (f"pgbouncer_database_{prom}_total", ["target", "database"])
       for name, prom in (("transactions", "transactions"), ("queries", "queries"),
                          ("server_assignments", "server_assignments"),
                          ("received", "received_bytes"), ("sent", "sent_bytes"),
                          ("transaction_time", "transaction_time_seconds"),
                          ("query_time", "query_time_seconds"),
                          ("wait_time", "wait_time_seconds"))},
    "postgresql.client.process.connections": ("postgresql_client_process_connections",
                                              ["target", "pid", "command"]),
    "pgconn_agent.client_processes.unresolved": ("pgconn_agent_client_processes_unresolved",
                                                 ["target"]),
}


def test_contract_matches_the_published_table() -> None:
    assert {m.name for m in c.METRICS} == set(EXPECTED)
    for spec in c.METRICS:
        prom, attrs = EXPECTED[spec.name]
        assert spec.prometheus_name == prom, spec.name
        assert list(spec.attribute_names()) == attrs, spec.name


G_, U_, C_, H_ = (c.Instrument.GAUGE, c.Instrument.UPDOWNCOUNTER, c.Instrument.COUNTER,
                  c.Instrument.HISTOGRAM)

# Cases published with Prometheus' OTLP translator (prometheus/otlptranslator, normalizeName
# with suffixes): (name, unit, instrument, Prometheus name).
TRANSLATOR_CASES = [
    ("system.filesystem.usage", "By", G_, "system_filesystem_usage_bytes"),
    ("system.io", "By", C_, "system_io_bytes_total"),
    ("network_transmitted_bytes_total", "By", C_, "network_transmitted_bytes_total"),
    ("\t system.filesystem.usage       ", "  By\t", G_, "system_filesystem_usage_bytes"),
    ("system.network.dropped", "{packets}", G_, "system_network_dropped"),
    ("system.network.dropped", "nonstandard:_1", G_, "system_network_dropped_nonstandard:_1"),
    ("system.network.dropped", "{packets}", C_, "system_network_dropped_total"),
    ("system.network.packets.dropped", "packets", G_, "system_network_packets_dropped"),
    ("system.network.packets", "packets", C_, "system_network_packets_total"),
    ("hw.gpu.memory.utilization", "1", G_, "hw_gpu_memory_utilization_ratio"),
    ("hw.fan.speed_ratio", "1", G_, "hw_fan_speed_ratio"),
    ("objects", "1", C_, "objects_total"),
    ("broken.metric.speed", "km/h", G_, "broken_metric_speed_km_per_hour"),
    ("astro.light.speed_limit", "m/s", G_, "astro_light_speed_limit_meters_per_second"),
    ("system.network.dropped", "non/standard:_1", G_,
     "system_network_dropped_non_per_standard:_1"),
    ("broken.metric.speed", "km/\u00b0", G_, "broken_metric_speed_km"),
    ("broken.metric.success_ratio", "%", G_, "broken_metric_success_ratio_percent"),
    ("broken.metric.success_percent", "%", G_, "broken_metric_success_percent"),
    ("test.metric.spaces", "   \t  ", G_, "test_metric_spaces"),
    ("active_directory.ds.replication.object.rate", "{objects}/s", G_,
     "active_directory_ds_replication_object_rate_per_second"),
    ("active_directory.ds.ldap.bind.last_successful.time", "ms", G_,
     "active_directory_ds_ldap_bind_last_successful_time_milliseconds"),
    ("apache.workers", "connections", G_, "apache_workers_connections"),
    ("system.disk.operation_time", "s", C_, "system_disk_operation_time_seconds_total"),
    ("system.cpu.load_average.15m", "1", G_, "system_cpu_load_average_15m_ratio"),
    ("mongodbatlas.process.oplog.rate", "GiBy/h", G_,
     "mongodbatlas_process_oplog_rate_gibibytes_per_hour"),
    ("mongodbatlas.process.db.query_targeting.scanned_per_returned", "{scanned}/{returned}", G_,
     "mongodbatlas_process_db_query_targeting_scanned_per_returned"),
    ("nsxt.node.memory.usage", "KBy", G_, "nsxt_node_memory_usage_kilobytes"),
    ("redis.latest_fork", "us", G_, "redis_latest_fork_microseconds"),
    ("3.14 digits", "", G_, "_3_14_digits"),
    ("envoy__rule_engine_zlib_buf_error", "", G_, "envoy_rule_engine_zlib_buf_error"),
    (":foo::bar", "", C_, ":foo::bar_total"),
    ("system.io", "foo/bar", C_, "system_io_foo_per_bar_total"),
    ("metric_with_\u5b57\u7b26_foreign_characters", "", C_,
     "metric_with_foreign_characters_total"),
    ("temperature", "%*()\u00b0:C", G_, "temperature_:C"),
    # Non-monotonic sums become gauges without _total, and without _ratio for unit 1.
    ("db.client.connection.count", "{connection}", U_, "db_client_connection_count"),
    ("a.b", "1", U_, "a_b"),
    ("a.b_seconds", "s", H_, "a_b_seconds"),
]


@pytest.mark.parametrize(("name", "unit", "instrument", "expected"), TRANSLATOR_CASES)
def test_prometheus_name_follows_prometheus_own_translator(
        name: str, unit: str, instrument: c.Instrument, expected: str) -> None:
    assert c.prometheus_name(name, unit, instrument) == expected


def test_counts_are_non_monotonic_sums_that_prometheus_sees_as_gauges() -> None:
    counts = [m for m in c.METRICS if m.unit in ("{connection}", "{backend}", "{group}")
              and m not in (c.CONNECTION_MAX, c.CONNECTION_RESERVED, c.CONNECTION_LIMIT,
                            c.CONNECTION_OPENED, c.POOLER_POOL_SIZE, c.POOLER_DATABASE_MAX,
                            c.POOLER_CLIENT_MAX)]
    assert counts and all(m.instrument is U_ for m in counts), [m.name for m in counts]
    assert U_.prometheus_type == "gauge" and C_.prometheus_type == "counter"


def test_dropping_a_dimension_removes_it_from_g() -> None:
    dims = ("datname", "application_name", "state")
    assert c.CONNECTION_COUNT.attribute_names(dims) == ("target", *dims)
