"""The metric contract: every metric the agent exports, declared once.

This module is the product's public interface. The OpenTelemetry instruments, the Prometheus
endpoint's names, ``docs/metrics.md``, the dashboards, the alert rules and the tests all read it.
Changing a name here is a breaking change: add metrics, never rename them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .spec import PollError, SessionOutcome


class Instrument(Enum):
    """OpenTelemetry instrument kinds; counts of things present now are UpDownCounters
    (non-monotonic sums, as the semantic conventions model ``db.client.connection.count``),
    so a backend may add them across attributes."""

    GAUGE = "gauge"
    UPDOWNCOUNTER = "updowncounter"
    COUNTER = "counter"
    HISTOGRAM = "histogram"

    @property
    def prometheus_type(self) -> str:
        """The Prometheus metric type the OTLP translation gives this instrument."""
        return {"updowncounter": "gauge"}.get(self.value, self.value)


GROUP_DIMENSIONS: tuple[str, ...] = (
    "datname", "usename", "application_name", "client_addr", "state")
"""Group attributes G; configured-away dimensions drop out of G."""

GROUP = "G"
"""Placeholder in ``MetricSpec.attributes`` for the configured group dimensions."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    instrument: Instrument
    unit: str
    description: str
    attributes: tuple[str, ...]

    @property
    def prometheus_name(self) -> str:
        return prometheus_name(self.name, self.unit, self.instrument)

    def attribute_names(self, group: tuple[str, ...] = GROUP_DIMENSIONS) -> tuple[str, ...]:
        """Concrete attribute names, with ``G`` expanded to the configured group dimensions."""
        out: list[str] = []
        for attr in self.attributes:
            out.extend(group if attr == GROUP else (attr,))
        return tuple(out)


_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
    "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes", "KBy": "kilobytes",
    "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes", "m": "meters", "V": "volts",
    "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius", "Hz": "hertz",
    "1": "", "%": "percent",
}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week",
              "mo": "month", "y": "year"}
_INVALID = re.compile(r"[^a-zA-Z0-9:]")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    """Main and ``per_`` suffixes of a UCUM unit; annotations (``{...}``) name no unit."""
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    main_suffix = _UNITS.get(main, main) if main and not re.search(r"[{}]", main) else ""
    per_suffix = _PER_UNITS.get(per, per) if per and not re.search(r"[{}]", per) else ""
    return main_suffix, f"per_{per_suffix}" if per_suffix else ""


def _clean_unit(unit: str) -> str:
    return re.sub(r"__+", "_", _INVALID.sub("_", unit)).removeprefix("_")


def prometheus_name(name: str, unit: str, instrument: Instrument) -> str:
    """The name Prometheus' own OTLP translation (``UnderscoreEscapingWithSuffixes``) gives.

    The name splits into tokens at every character outside ``[a-zA-Z0-9:]`` (so ``__``
    collapses); the unit's suffixes (``s`` -> ``seconds``, ``By/s`` -> ``bytes_per_second``,
    annotations dropped) are appended unless a token already says them; monotonic sums end in
    ``_total`` and unit-``1`` gauges in ``_ratio``, each moved to the end if already present;
    a leading digit gets a ``_`` prefix.
    """
    tokens = [t for t in _INVALID.split(name) if t]
    main, per = (_clean_unit(u) for u in _unit_suffixes(unit))
    per = "" if per == "per_" else per.removesuffix("_")
    if per:
        main = main.removesuffix("_")
    tokens += [u for u in (main, per) if u and u not in tokens]
    for suffix, applies in (("total", instrument is Instrument.COUNTER),
                            ("ratio", unit == "1" and instrument is Instrument.GAUGE)):
        if applies:
            tokens = [t for t in tokens if t != suffix] + [suffix]
    joined = "_".join(tokens)
    return f"_{joined}" if joined[:1].isdigit() else joined


def _spec(
    name: str, instrument: Instrument, unit: str, attributes: tuple[str, ...], description: str
) -> MetricSpec:
    return MetricSpec(name, instrument, unit, description, attributes)


G, U, C, H = (Instrument.GAUGE, Instrument.UPDOWNCOUNTER, Instrument.COUNTER,
              Instrument.HISTOGRAM)
T = ("target",)

CONNECTION_COUNT = _spec(
    "postgresql.connection.count", U, "{connection}", (*T, GROUP), "Client backends per group."
)
CONNECTION_MAX = _spec(
    "postgresql.connection.max", G, "{connection}", T, "The server's max_connections."
)
CONNECTION_RESERVED = _spec(
    "postgresql.connection.reserved", G, "{connection}", T,
    "Slots reserved for superusers and pg_use_reserved_connections "
    "(superuser_reserved_connections + reserved_connections).",
)
CONNECTION_UTILIZATION = _spec(
    "postgresql.connection.utilization", G, "1", T,
    "Client backends divided by usable slots (max_connections - reserved).",
)
STATE_AGE_MAX = _spec(
    "postgresql.connection.state_age.max", G, "s", (*T, GROUP),
    "Oldest time since the last state change (now - state_change) in the group.",
)
TRANSACTION_AGE_MAX = _spec(
    "postgresql.transaction.age.max", G, "s", (*T, GROUP),
    "Oldest open transaction (now - xact_start) in the group.",
)
CONNECTION_WAITING = _spec(
    "postgresql.connection.waiting", U, "{connection}",
    (*T, "datname", "usename", "application_name", "wait_event_type", "wait_event"),
    "Active sessions waiting, by wait event.",
)
LOCK_WAITING = _spec(
    "postgresql.lock.waiting", U, "{connection}",
    (*T, "datname", "application_name", "locktype", "mode"),
    "Sessions waiting for a heavyweight lock.",
)
LOCK_WAIT_TIME_MAX = _spec(
    "postgresql.lock.wait_time.max", G, "s", (*T, "datname", "application_name"),
    "Longest current heavyweight-lock wait.",
)
LOCK_BLOCKING = _spec(
    "postgresql.lock.blocking", U, "{connection}", (*T, GROUP),
    "Sessions blocked (directly) by this group's sessions.",
)
ROOT_BLOCKERS_SHOWN = 5
"""Root blockers named by pid in ``postgresql.lock.root_blocker`` (bounds its series)."""
LOCK_ROOT_BLOCKING = _spec(
    "postgresql.lock.root_blocking", U, "{connection}", (*T, GROUP),
    "Sessions queued, directly or behind other waiters, behind this group's root blockers "
    "(sessions that hold the lock without waiting for one themselves).",
)
LOCK_ROOT_BLOCKER = _spec(
    "postgresql.lock.root_blocker", U, "{connection}", (*T, "pid", GROUP),
    f"The current root blockers by pid (at most {ROOT_BLOCKERS_SHOWN}, most queued first), "
    "valued by the sessions queued behind each: the pid to terminate.",
)
BACKEND_COUNT = _spec(
    "postgresql.backend.count", U, "{backend}", (*T, "backend_type"), "All backends by type."
)
CONNECTION_LIMIT = _spec(
    "postgresql.connection.limit", G, "{connection}", (*T, "scope", "name"),
    "Role (rolconnlimit) or database (datconnlimit) connection limit, where one is set.",
)
SESSIONS = _spec(
    "postgresql.sessions", C, "{session}", (*T, "datname", "outcome"),
    "pg_stat_database session counters by outcome (all, abandoned, fatal, killed).",
)
CONNECTION_OPENED = _spec(
    "postgresql.connection.opened", C, "{connection}", (*T, "application_name", "client_addr"),
    "New client backends seen since the previous poll (by the poll, or by a catch burst after "
    "the previous one).",
)
CONNECTION_OPEN_RATE = _spec(
    "postgresql.connection.open_rate", G, "{connection}/s",
    (*T, "datname", "application_name", "client_addr"),
    "New sessions per second that closed again (churn) over the last minute, attributed to "
    "the holder: the database's pg_stat_database.sessions rate shared by the short-lived "
    "backends the polls and their catch bursts caught (PostgreSQL 14+; only holders with "
    "caught backends).",
)
SETTING = _spec(
    "postgresql.setting", G, "", (*T, "name"),
    "Connection-relevant settings, durations in seconds, others as plain numbers.",
)
AGENT_UP = _spec("pgconn_agent.up", G, "", T, "1 if the last poll of the target succeeded.")
POLL_DURATION = _spec("pgconn_agent.poll.duration", H, "s", T,
                      "Time one poll of the server took (under its first target).")
POLL_ERRORS = _spec(
    "pgconn_agent.poll.errors", C, "{error}", (*T, "error"),
    "Failed polls by kind (connect, auth, timeout, too_many_connections, query).",
)
GROUPS_FOLDED = _spec(
    "pgconn_agent.groups.folded", U, "{group}", T,
    "Groups folded into the overflow group by the cardinality cap.",
)
SESSIONS_HIDDEN = _spec(
    "pgconn_agent.sessions.hidden", U, "{connection}", T,
    "Client sessions whose details the agent's role cannot see (grant pg_monitor).",
)
POLL_SKIPPED = _spec(
    "pgconn_agent.poll.skipped", C, "{poll}", T,
    "Polls skipped because the previous poll of the target was still running.",
)
CLIENT_PROCESS_CONNECTIONS = _spec(
    "postgresql.client.process.connections", U, "{connection}", (*T, "pid", "command"),
    "Connections held by each client process on the agent's own host (matched through /proc; "
    "only clients whose client_addr is one of this host's addresses).",
)
CLIENT_PROCESS_UNRESOLVED = _spec(
    "pgconn_agent.client_processes.unresolved", U, "{connection}", T,
    "Connections from this host's addresses not matched to a process (socket closed since, "
    "another network namespace, or no CAP_SYS_PTRACE to read other users' /proc/<pid>/fd).",
)

# PgBouncer targets (a DSN with dbname=pgbouncer): its admin console's SHOW POOLS / CLIENTS /
# DATABASES / CONFIG. A pool is PgBouncer's (database, user) pair.
POOL = ("database", "user")
PGBOUNCER_HOLDER: tuple[str, ...] = ("application_name", "client_addr", "user", "database",
                                     "state")
"""Attributes of a PgBouncer client holder (capped like G, same overflow value)."""
POOLER_CLIENTS = _spec(
    "pgbouncer.pool.clients", U, "{connection}", (*T, *POOL, "state"),
    "Client connections per pool: active (linked to a server or idle) or waiting for one.",
)
POOLER_SERVERS = _spec(
    "pgbouncer.pool.servers", U, "{connection}", (*T, *POOL, "state"),
    "Server connections per pool by state: active (linked to a client), idle, used, tested, "
    "login.",
)
POOLER_WAIT_MAX = _spec(
    "pgbouncer.pool.wait.max", G, "s", (*T, *POOL),
    "Longest time a client of the pool has been waiting for a server connection (maxwait).",
)
POOLER_POOL_SIZE = _spec(
    "pgbouncer.pool.size", G, "{connection}", (*T, *POOL, "pool_mode"),
    "Server connections the pool may open (its database's pool_size, plus reserve_pool).",
)
POOLER_DATABASE_MAX = _spec(
    "pgbouncer.database.connection.max", G, "{connection}", (*T, "database"),
    "A database's max_db_connections over all its pools, where one is set.",
)
POOLER_CLIENT_MAX = _spec(
    "pgbouncer.client.max", G, "{connection}", T,
    "PgBouncer's max_client_conn: client connections it accepts in all.",
)
POOLER_CLIENT_COUNT = _spec(
    "pgbouncer.client.count", U, "{connection}", (*T, *PGBOUNCER_HOLDER),
    "Client connections per holder (application_name, client_addr, user, database, state).",
)

# PgBouncer's SHOW STATS: per-database counters since it started (a restart resets them, as
# rate() expects); microseconds exported as seconds. Columns a PgBouncer lacks are not exported.
STATS_ATTRIBUTES = (*T, "database")
POOLER_TRANSACTIONS = _spec(
    "pgbouncer.database.transactions", C, "{transaction}", STATS_ATTRIBUTES,
    "Transactions PgBouncer has pooled (total_xact_count; in transaction mode each needed a "
    "server connection).",
)
POOLER_QUERIES = _spec(
    "pgbouncer.database.queries", C, "{query}", STATS_ATTRIBUTES,
    "Queries PgBouncer has pooled (total_query_count; total_requests before PgBouncer 1.8).",
)
POOLER_SERVER_ASSIGNMENTS = _spec(
    "pgbouncer.database.server_assignments", C, "{assignment}", STATS_ATTRIBUTES,
    "Times a server connection was assigned to a client (total_server_assignment_count; "
    "PgBouncer 1.23+).",
)
POOLER_RECEIVED = _spec(
    "pgbouncer.database.received", C, "By", STATS_ATTRIBUTES,
    "Bytes PgBouncer received from clients (total_received).",
)
POOLER_SENT = _spec(
    "pgbouncer.database.sent", C, "By", STATS_ATTRIBUTES,
    "Bytes PgBouncer sent to clients (total_sent).",
)
POOLER_TRANSACTION_TIME = _spec(
    "pgbouncer.database.transaction_time", C, "s", STATS_ATTRIBUTES,
    "Time in transactions, running queries or idle in transaction (total_xact_time), from "
    "the client's first request, so including its wait for a server connection.",
)
POOLER_QUERY_TIME = _spec(
    "pgbouncer.database.query_time", C, "s", STATS_ATTRIBUTES,
    "Time running queries (total_query_time), from the client's request, so including its "
    "wait for a server connection.",
)
POOLER_WAIT_TIME = _spec(
    "pgbouncer.database.wait_time", C, "s", STATS_ATTRIBUTES,
    "Time clients spent waiting for a server connection (total_wait_time; added when the "
    "client gets its server connection, so a wait still under way is not in it yet).",
)

METRICS: tuple[MetricSpec, ...] = (
    CONNECTION_COUNT, CONNECTION_MAX, CONNECTION_RESERVED, CONNECTION_UTILIZATION,
    STATE_AGE_MAX, TRANSACTION_AGE_MAX, CONNECTION_WAITING, LOCK_WAITING, LOCK_WAIT_TIME_MAX,
    LOCK_BLOCKING, BACKEND_COUNT, CONNECTION_LIMIT, SESSIONS, CONNECTION_OPENED, SETTING,
    CONNECTION_OPEN_RATE,
    AGENT_UP, POLL_DURATION, POLL_ERRORS, GROUPS_FOLDED, SESSIONS_HIDDEN, POLL_SKIPPED,
    LOCK_ROOT_BLOCKING, LOCK_ROOT_BLOCKER,
    POOLER_CLIENTS, POOLER_SERVERS, POOLER_WAIT_MAX, POOLER_POOL_SIZE, POOLER_DATABASE_MAX,
    POOLER_CLIENT_MAX, POOLER_CLIENT_COUNT,
    POOLER_TRANSACTIONS, POOLER_QUERIES, POOLER_SERVER_ASSIGNMENTS, POOLER_RECEIVED, POOLER_SENT,
    POOLER_TRANSACTION_TIME, POOLER_QUERY_TIME, POOLER_WAIT_TIME,
    CLIENT_PROCESS_CONNECTIONS, CLIENT_PROCESS_UNRESOLVED,
)
BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
PGBOUNCER_METRICS: tuple[MetricSpec, ...] = tuple(
    m for m in METRICS if m.name.startswith("pgbouncer."))
"""Metrics of PgBouncer targets only; a PostgreSQL target exports every other metric."""
POSTGRESQL_TARGET_METRICS: tuple[MetricSpec, ...] = tuple(
    m for m in METRICS if m not in PGBOUNCER_METRICS)

PER_TARGET: tuple[MetricSpec, ...] = (AGENT_UP, POLL_ERRORS, POLL_SKIPPED)
"""The agent's own view of each configured target: exported for every target."""
DATABASE_ATTRIBUTE = "datname"
"""A server point carrying it is database-scoped: exported once, under the target of that
database; every other server point is server-wide: exported once per server."""


def scope(spec: MetricSpec) -> str:
    """``target``, ``database`` (its points name a database) or ``server`` (see docs/fleet.md)."""
    if spec in PER_TARGET:
        return "target"
    return "database" if DATABASE_ATTRIBUTE in spec.attribute_names() else "server"

POLL_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""Second-scale histogram boundaries (the SDK's defaults are for milliseconds)."""

POLL_ERROR_KINDS: tuple[str, ...] = tuple(PollError)
SESSION_OUTCOMES: tuple[str, ...] = tuple(SessionOutcome)

OVERFLOW_VALUE = "(other: folded by cardinality cap)"
"""Value every group dimension takes in the overflow group."""
AGENT_APPLICATION_NAME = "pgconn-agent"
"""The application_name of the agent's own connections."""
UNSET_APPLICATION = "(unset)"
LOCAL_CLIENT = "local"
HIDDEN = "(hidden)"
"""State and client_addr of a session whose details the agent's role may not see."""
