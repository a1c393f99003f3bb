"""The connections overview: how full each server is and who holds its slots.

Each row is one function below, in the order the rows appear; each returns a declaration
table of panels.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import gauge, stat, table
from grafana_foundation_sdk.models import common as gc
from grafana_foundation_sdk.models import dashboard as gm

from agent import contract as c
from dashboards import measures as m
from dashboards import thresholds as t
from dashboards.layout import Panel, Row, application_variable, dashboard
from dashboards.links import OVERVIEW_UID, Alert, holder_links, runbook
from dashboards.panels import (
    DATASOURCE,
    holders_table,
    instant_table,
    limit_line,
    query,
    reduce_last,
    series,
    single_stat,
    sorted_desc,
    stat_base,
    table_base,
    unit_override,
    value_text,
)
from dashboards.promql import (
    APPS,
    NONE_SET,
    limit_usage,
    limits,
    sel,
    usable,
    zero_per_target,
)
from dashboards.thresholds import NEUTRAL, steps

COUNT = c.CONNECTION_COUNT
BY_APP = ("target", "application_name")
BY_HOLDER = ("target", "application_name", "client_addr")


def connections_overview() -> gd.Dashboard:
    return dashboard(
        "PostgreSQL connections (pgconn-agent)", OVERVIEW_UID,
        "Who holds the connection slots of each PostgreSQL target: by state, application, "
        "client host and holder group, with idle-in-transaction sessions, lock chains, "
        "churn, session outcomes, limits and the agent's own health.",
        application_variable(multi=True),
        [_capacity(), _holders(), _idle_transactions_and_locks(), _churn(),
         _settings_and_limits(), _agent_health(), _client_processes()])


def _capacity() -> Row:
    return Row("Capacity", [
        _usable_in_use(),
        single_stat(
            "Used / usable slots",
            "Client backends now, and the slots clients may use (max_connections minus "
            "reserved). Raising max_connections rarely fixes a full server: find the holder "
            "below first.",
            query(f"sum by (target) ({sel(COUNT)})", "used {{target}}", ref="A"),
            query(usable(), "usable {{target}}", ref="B"),
            unit="none", thresholds=NEUTRAL, w=5, h=7)
        .links(runbook(Alert.NEAR_LIMIT, Alert.EXHAUSTED)),
        single_stat(
            "Free usable slots",
            f"Usable slots minus client backends. {t.FREE_SLOTS.said()}.",
            query(f"{usable()} - sum by (target) ({sel(COUNT)})", "{{target}}"),
            unit="none", thresholds=t.FREE_SLOTS.steps(),
            w=4, h=7)
        .links(runbook(Alert.EXHAUSTED)),
        series(
            "All backends by type",
            "Every backend of the server by backend_type (client backends, autovacuum "
            "workers, WAL senders, parallel workers...). Background processes use slots too.",
            query(f"sum by (target, backend_type) ({sel(c.BACKEND_COUNT)})",
                  "{{target}} {{backend_type}}"),
            unit="none", w=10, h=7, stacked=True),
    ])


def _holders() -> Row:
    return Row("Who holds the connections", [
        series(
            "Client backends by state",
            "Client backends by state, stacked, with the usable limit as a dashed line. A "
            "wall of 'idle' near the limit means client pools hold slots they do not use.",
            query(m.CONNECTIONS.expr(("target", "state")), "{{target}} {{state}}", ref="A"),
            query(usable(), "{{target}} usable limit", ref="B"),
            unit="none", w=12, h=9, stacked=True)
        .override_by_regexp(".* usable limit$", limit_line()),
        m.CONNECTIONS.panel(
            "Client backends by application",
            "Client backends per application_name (filtered by the Application variable). "
            "'(unset)' means the client sends no application_name: look at the host panel. "
            "Click a series to drill down into that application.", BY_APP, APPS, h=9,
            runbooks=(Alert.APP_HOLDS, Alert.NEAR_LIMIT))
        .data_links(holder_links()),
        m.CONNECTIONS.panel(
            "Client backends by client host",
            "Client backends per client address ('local' for unix sockets). Several hosts "
            "with the same count usually mean one pool per instance multiplied by replicas.",
            ("target", "client_addr"), APPS, h=9, runbooks=(Alert.HOST_HOLDS,)),
        m.IDLE_COUNT.panel(
            "Idle client backends by application and host",
            "Idle sessions per application and host: connections a pool keeps open without "
            "using them. A holder with many idle sessions for minutes is hoarding slots. "
            "Click a series to drill down.", BY_HOLDER, APPS, h=9)
        .data_links(holder_links()),
        holders_table(
            "Top holders",
            "One row per holder group (target, application, host, user, database, state), "
            "largest first, with the oldest time in that state and the oldest open "
            "transaction. Click an application to drill down into it. Groups the agent's "
            "cardinality cap folded appear as '(other: folded by cardinality cap)'.",
            m.HOLDER_GROUP, APPS, w=24, h=11)
        .links(runbook(Alert.NEAR_LIMIT, Alert.HOST_HOLDS)),
    ])


def _idle_transactions_and_locks() -> Row:
    return Row("Idle in transaction and locks", [*_idle_transactions(), *_locks()])


def _idle_transactions() -> list[Panel]:
    return [
        m.IDLE_IN_TX_COUNT.panel(
            "Idle in transaction by application",
            "Sessions inside an open transaction doing nothing: they hold their slot and "
            "their locks until the client commits, rolls back or disconnects.", BY_APP, APPS),
        m.IDLE_IN_TX_AGE.panel(
            "Oldest idle in transaction by application",
            "Longest time a session of the application has been idle in transaction (now - "
            "state_change). " + t.IDLE_IN_TX.said() + ".", BY_APP, APPS),
        m.XACT_AGE.panel(
            "Oldest open transaction by application",
            "Longest-running transaction per application (now - xact_start), any state. Long "
            "transactions hold locks and hold back vacuum. " + t.XACT_AGE.said() + ".",
            BY_APP, APPS),
        m.WAITING.panel(
            "Waiting sessions by wait event type",
            "Active sessions that are waiting, by wait_event_type (Lock, LWLock, IO, "
            "Client...).", ("target", "wait_event_type"), APPS),
    ]


def _locks() -> list[Panel]:
    return [
        m.LOCK_WAITERS.panel(
            "Lock waiters by application",
            "Sessions waiting for a heavyweight lock, by the waiting application and lock "
            "mode.", ("target", "application_name", "mode"), APPS, w=8),
        m.ROOT_BLOCKING.panel(
            "Root blockers by application",
            "Sessions queued behind each holder group's root blockers, directly or behind "
            "other waiters, by the root's application, host and state." + m.ROOT_NOTE,
            (*BY_HOLDER, "state"), APPS, w=8, suffix=" holds up"),
        m.DIRECT_BLOCKING.panel(
            "Blocked directly by application",
            "Sessions blocked directly (pg_blocking_pids) by each holder group's sessions, "
            "roots and intermediates alike: a waiter at the head of a tuple-lock queue blocks "
            "the ones behind it (state 'active') while itself waiting for the root. Compare "
            "with the root blockers panel.", (*BY_HOLDER, "state"), APPS, w=8,
            suffix=" blocks"),
        m.LOCK_WAIT_AGE.panel(
            "Longest lock wait by application",
            "Longest current heavyweight-lock wait per waiting application. "
            + t.LOCK_WAIT.said() + ".", BY_APP, APPS, w=8),
        m.root_blockers_table(APPS, w=16, h=8),
    ]


def _churn() -> Row:
    return Row("Churn and session outcomes", [
        m.OPENED.panel(
            "New connections per second by application and host",
            "Client backends opened per second (new backends seen by the agent's polls). A "
            "steady high rate means a client connects per request or a pool that keeps "
            "recycling.", BY_HOLDER, APPS),
        series(
            "Session outcomes per second",
            "pg_stat_database session counters per second by outcome: all sessions, "
            "abandoned (client vanished), fatal (ended by an error) and killed (terminated by "
            "an operator or a timeout such as idle_in_transaction_session_timeout). "
            "PostgreSQL 14+.",
            query(f"sum by (target, outcome) (rate({sel(c.SESSIONS)}[$__rate_interval]))",
                  "{{target}} {{outcome}}"),
            unit="cps", w=12, h=8)
        .links(runbook(Alert.EXHAUSTED)),
        series(
            "Short-lived sessions per second by holder (churn)",
            "Sessions that opened and closed again, per second over the last minute: the "
            "database's pg_stat_database.sessions rate shared among the holders whose "
            "short-lived backends the polls caught (PostgreSQL 14+). No series: not "
            "attributable.",
            query(f"sum by (target, datname, application_name, client_addr) "
                  f"({sel(c.CONNECTION_OPEN_RATE, APPS)})",
                  "{{target}} {{datname}} {{application_name}} @ {{client_addr}}"),
            unit="cps", w=24, h=8)
        .links(runbook(Alert.CHURN)),
    ])


def _settings_and_limits() -> Row:
    return Row("Settings and limits", [
        _connection_settings(),
        _limits_table(),
    ])


def _agent_health() -> Row:
    bucket = sel(c.POLL_DURATION, suffix="_bucket")
    return Row("Agent health", [
        _agent_up(),
        series(
            "Poll duration",
            "Time one poll of the target takes (p50 and p95 from the histogram). Polls near "
            "the poll interval get skipped.",
            *(query(f"histogram_quantile({q}, sum by (target, le) "
                    f"(rate({bucket}[$__rate_interval])))", f"{{{{target}}}} p{q * 100:g}",
                    ref=ref) for ref, q in (("A", 0.95), ("B", 0.5))),
            unit="s", w=7, h=7, thresholds=t.POLL_DURATION.steps())
        .links(runbook(Alert.POLLS_STALLED, Alert.POLLS_FAILING)),
        series(
            "Poll errors and skipped polls",
            "Failed polls by kind (connect, auth, timeout, too_many_connections, query) and "
            "polls skipped because the previous one still ran, per interval. 'none' is drawn "
            "at 0 for a target that never had one.",
            query(f"sum by (target, error) "
                  f"(increase({sel(c.POLL_ERRORS)}[$__rate_interval]))"
                  f" or on (target) {zero_per_target([('error', 'none')])}",
                  "{{target}} error {{error}}", ref="A"),
            query(f"sum by (target) (increase({sel(c.POLL_SKIPPED)}[$__rate_interval]))"
                  f" or on (target) {zero_per_target()}",
                  "{{target}} skipped", ref="B"),
            unit="none", w=7, h=7, thresholds=steps((None, "green"), (1, "red")))
        .links(runbook(Alert.POLLS_FAILING, Alert.POLLS_STALLED,
                       Alert.TARGET_DOWN)),
        series(
            "Folded groups and hidden sessions",
            "Groups folded into '(other: folded by cardinality cap)' (raise the cap or drop a "
            "dimension) and sessions whose details the agent's role cannot see (grant "
            "pg_monitor).",
            query(f"max by (target) ({sel(c.GROUPS_FOLDED)})", "{{target}} folded groups",
                  ref="A"),
            query(f"max by (target) ({sel(c.SESSIONS_HIDDEN)})", "{{target}} hidden sessions",
                  ref="B"),
            unit="none", w=6, h=7, thresholds=steps((None, "green"), (1, "orange")))
        .links(runbook(Alert.GROUPS_FOLDED, Alert.SESSIONS_HIDDEN)),
    ])


def _client_processes() -> Row:
    return Row("Client processes on the agent's host", [
        _client_process_table(),
        series(
            "Connections not matched to a process",
            "Connections from the agent's host that no readable process owns: closed since "
            "the poll, another network namespace, or an agent without CAP_SYS_PTRACE.",
            query(f"max by (target) ({sel(c.CLIENT_PROCESS_UNRESOLVED)})",
                  "{{target}} unresolved"),
            unit="none", w=8, h=8, thresholds=steps((None, "green"), (1, "orange"))),
    ])



def _usable_in_use() -> gauge.Panel:
    """The utilization gauge, coloured at the agent's finding thresholds."""
    return (
        gauge.Panel().title("Usable slots in use").datasource(DATASOURCE)
        .description("Client backends divided by usable slots (max_connections minus the "
                     "superuser/reserved slots). " + t.UTILIZATION.said()
                     + ": at 100 % clients get 'remaining connection slots are reserved' "
                     "or 'too many clients'.")
        .unit("percentunit").min(0).max(1).decimals(1).span(5).height(7)
        .thresholds(t.UTILIZATION.steps())
        .show_threshold_markers(True).reduce_options(reduce_last())
        .links(runbook(Alert.NEAR_LIMIT, Alert.EXHAUSTED))
        .with_target(query(f"max by (target) ({sel(c.CONNECTION_UTILIZATION)})", "{{target}}")))


def _connection_settings() -> stat.Panel:
    """The connection settings as values; durations in seconds, 0 as disabled."""
    return (
        stat_base("Connection settings",
                  "Connection-relevant server settings (session defaults). Durations in "
                  "seconds; 0 means disabled.", "none", 16, 8, NEUTRAL)
        .color_mode(gc.BigValueColorMode.NONE).graph_mode(gc.BigValueGraphMode.NONE)
        .with_target(query(f"max by (target, name) ({sel(c.SETTING)})",
                           "{{name}} ({{target}})", instant=True))
        .override_by_regexp(".*(timeout|_idle|_interval) .*",
                            [*unit_override("s"), *value_text(0, "disabled")]))


def _limits_table() -> table.Panel:
    """Role and database limits with their usage; "none set" where a target has none."""
    return (
        instant_table(
            "Role and database connection limits",
            "Connection limits set on roles (rolconnlimit) or databases (datconnlimit), with "
            "the client backends of that role or database now; 'none set' when a target has "
            "no limit of that scope (In use then counts all its client backends). A limit "
            "reached gives 'too many connections for role/database'. Usage is summed over the "
            "agent's groups, so it needs usename/datname among the configured group "
            "dimensions.",
            ("target", "scope", "name"),
            [("A", limits(), "Limit"), ("B", limit_usage(), "In use")], sort="In use",
            w=8, h=8)
        .links(runbook(Alert.LIMIT))
        .override_by_name("Limit", value_text(NONE_SET, "none set")))


def _agent_up() -> stat.Panel:
    """Up or down per target, from the agent's own up metric."""
    return (
        stat_base("Agent up",
                  "1 when the agent's last poll of the target succeeded. Down means the "
                  "dashboard's other panels show no current data for that target.",
                  "none", 4, 7, steps((None, "red"), (1, "green")))
        .color_mode(gc.BigValueColorMode.BACKGROUND).graph_mode(gc.BigValueGraphMode.NONE)
        .mappings([gm.ValueMap(options={
            "0": gm.ValueMappingResult(text="down", color="red", index=0),
            "1": gm.ValueMappingResult(text="up", color="green", index=1)})])
        .links(runbook(Alert.TARGET_DOWN, Alert.POLLS_STALLED))
        .with_target(query(f"max by (target) ({sel(c.AGENT_UP)})", "{{target}}")))


def _client_process_table() -> table.Panel:
    """The agent host's client processes and their connections, largest first."""
    return (
        table_base("Connections by client process",
                   "Connections held by each process on the agent's own host, matched "
                   "through /proc (only clients whose client_addr is one of that host's "
                   "addresses). One process with many connections: several pools or one "
                   "oversized pool; many processes with a few each: instances multiply.",
                   16, 8)
        .with_target(query(f"sum by (target, pid, command) ({sel(c.CLIENT_PROCESS_CONNECTIONS)})",
                           ref="A", instant=True, table_format=True))
        .with_transformation(gm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True},
            "renameByName": {"Value": "Connections", "target": "Target", "pid": "PID",
                             "command": "Command"},
        }))
        .sort_by(sorted_desc("Connections")))
