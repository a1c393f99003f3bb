"""Prometheus alert rules for connection pressure, generated from the metric contract.

The committed ``alerts/pgconn-agent.rules.yml`` is ``render_rules({})``; a test fails when it
drifts. Public surface:

- ``THRESHOLDS`` / ``DEFAULTS``: every tunable (thresholds and ``for`` durations), documented.
- ``render_rules(overrides)``: the rule file (YAML text) with some thresholds changed; this is
  what ``pgconn-agent rules --set NAME=VALUE ...`` prints (``parse_overrides`` turns the
  ``--set`` strings into the dict).
- ``render_rules_helm(...)``: the same rules as a Helm template whose thresholds come from
  ``.Values.alerts.thresholds`` and whose Prometheus templates are escaped for Helm.
- ``rule_groups(overrides)``: the rule groups as plain data, for tests and other generators.

Metric names are read from ``agent.contract`` only; nothing here spells one out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from . import contract as c
from .errors import ConfigError

RUNBOOK_BASE = "https://github.com/pgconn-agent/pgconn-agent/blob/main/docs/runbooks.md"
RULE_FILE = "alerts/pgconn-agent.rules.yml"
HELM_VALUES_PATH = ".Values.alerts.thresholds"


@dataclass(frozen=True, slots=True)
class Threshold:
    """One tunable. Names ending in ``_for_seconds`` are ``for:`` durations of alerts."""

    name: str
    default: float
    unit: str
    description: str

    @property
    def is_duration(self) -> bool:
        return self.name.endswith("_for_seconds")


def _t(name: str, default: float, unit: str, description: str) -> Threshold:
    return Threshold(name, default, unit, description)


THRESHOLDS: tuple[Threshold, ...] = (
    _t("near_limit_ratio", 0.8, "ratio",
       "Client backends / usable slots above which PostgreSQLConnectionsNearLimit fires."),
    _t("near_limit_for_seconds", 300, "seconds",
       "`for` duration of PostgreSQLConnectionsNearLimit."),
    _t("exhausted_ratio", 0.95, "ratio",
       "Client backends / usable slots above which PostgreSQLConnectionsExhausted fires."),
    _t("exhausted_for_seconds", 60, "seconds", "`for` duration of PostgreSQLConnectionsExhausted."),
    _t("app_share_ratio", 0.5, "ratio",
       "Share of usable slots one application_name must hold for "
       "PostgreSQLApplicationHoldsMostSlots."),
    _t("app_host_share_ratio", 0.5, "ratio",
       "Share of usable slots one application_name on one client_addr must hold for "
       "PostgreSQLApplicationHostHoldsMostSlots."),
    _t("holder_filling_ratio", 0.8, "ratio",
       "Utilization the server must also be above for the two 'holds most slots' alerts."),
    _t("holder_for_seconds", 120, "seconds",
       "`for` duration of the two 'holds most slots' alerts."),
    _t("idle_hoarding_connections", 20, "connections",
       "Idle connections one application_name on one client_addr must hold for "
       "PostgreSQLIdleConnectionHoarding."),
    _t("idle_hoarding_age_seconds", 300, "seconds",
       "How long the oldest of those connections must have been idle."),
    _t("idle_hoarding_for_seconds", 600, "seconds",
       "`for` duration of PostgreSQLIdleConnectionHoarding."),
    _t("idle_in_transaction_warning_seconds", 60, "seconds",
       "Oldest idle-in-transaction age for PostgreSQLIdleInTransaction (warning)."),
    _t("idle_in_transaction_critical_seconds", 300, "seconds",
       "Oldest idle-in-transaction age for PostgreSQLIdleInTransaction (critical)."),
    _t("idle_in_transaction_for_seconds", 0, "seconds",
       "`for` duration of PostgreSQLIdleInTransaction (the age already is a duration)."),
    _t("long_transaction_seconds", 1800, "seconds",
       "Oldest transaction age (sessions not idle in transaction) for "
       "PostgreSQLLongTransaction."),
    _t("long_transaction_for_seconds", 0, "seconds",
       "`for` duration of PostgreSQLLongTransaction."),
    _t("lock_waiting_sessions", 5, "connections",
       "Sessions of one application_name in one database waiting for heavyweight locks, for "
       "PostgreSQLLockWaitsPilingUp."),
    _t("lock_waiting_for_seconds", 120, "seconds",
       "`for` duration of PostgreSQLLockWaitsPilingUp."),
    _t("blocked_by_idle_in_transaction_sessions", 1, "connections",
       "Sessions blocked by one holder's idle-in-transaction sessions, for "
       "PostgreSQLBlockedByIdleInTransaction."),
    _t("blocked_by_idle_in_transaction_for_seconds", 60, "seconds",
       "`for` duration of PostgreSQLBlockedByIdleInTransaction."),
    _t("churn_per_second", 5, "connections per second",
       "New connections per second from one application_name on one client_addr "
       "(rate over 5m), for PostgreSQLConnectionChurn."),
    _t("churn_for_seconds", 600, "seconds", "`for` duration of PostgreSQLConnectionChurn."),
    _t("connection_limit_ratio", 0.9, "ratio",
       "Connections / rolconnlimit (or datconnlimit) for PostgreSQLConnectionLimitNearlyReached."),
    _t("connection_limit_for_seconds", 300, "seconds",
       "`for` duration of PostgreSQLConnectionLimitNearlyReached."),
    _t("agent_down_for_seconds", 120, "seconds", "`for` duration of PgconnAgentTargetDown."),
    _t("poll_errors_per_10m", 3, "errors",
       "Failed polls of one kind in 10 minutes, for PgconnAgentPollsFailing."),
    _t("poll_errors_for_seconds", 300, "seconds", "`for` duration of PgconnAgentPollsFailing."),
    _t("groups_folded_for_seconds", 900, "seconds", "`for` duration of PgconnAgentGroupsFolded."),
    _t("sessions_hidden_for_seconds", 900, "seconds",
       "`for` duration of PgconnAgentSessionsHidden."),
    _t("agent_absent_for_seconds", 300, "seconds", "`for` duration of PgconnAgentAbsent."),
    _t("pgbouncer_wait_seconds", 1, "seconds",
       "Longest wait of a PgBouncer pool's client for a server connection above which "
       "PgBouncerClientsWaiting fires."),
    _t("pgbouncer_wait_for_seconds", 120, "seconds", "`for` duration of PgBouncerClientsWaiting."),
    _t("pgbouncer_client_limit_ratio", 0.8, "ratio",
       "PgBouncer client connections / max_client_conn for PgBouncerClientLimitNear."),
    _t("pgbouncer_client_limit_for_seconds", 300, "seconds",
       "`for` duration of PgBouncerClientLimitNear."),
)
DEFAULTS: dict[str, float] = {t.name: t.default for t in THRESHOLDS}

# Metric names, from the contract only. ``@key@`` in the texts below is replaced by these.
_METRICS: dict[str, str] = {
    "count": c.CONNECTION_COUNT.prometheus_name,
    "max": c.CONNECTION_MAX.prometheus_name,
    "reserved": c.CONNECTION_RESERVED.prometheus_name,
    "util": c.CONNECTION_UTILIZATION.prometheus_name,
    "state_age": c.STATE_AGE_MAX.prometheus_name,
    "xact_age": c.TRANSACTION_AGE_MAX.prometheus_name,
    "lock_waiting": c.LOCK_WAITING.prometheus_name,
    "lock_wait_time": c.LOCK_WAIT_TIME_MAX.prometheus_name,
    "lock_blocking": c.LOCK_BLOCKING.prometheus_name,
    "limit": c.CONNECTION_LIMIT.prometheus_name,
    "opened": c.CONNECTION_OPENED.prometheus_name,
    "up": c.AGENT_UP.prometheus_name,
    "errors": c.POLL_ERRORS.prometheus_name,
    "folded": c.GROUPS_FOLDED.prometheus_name,
    "hidden": c.SESSIONS_HIDDEN.prometheus_name,
    "pgb_clients": c.POOLER_CLIENTS.prometheus_name,
    "pgb_servers": c.POOLER_SERVERS.prometheus_name,
    "pgb_wait": c.POOLER_WAIT_MAX.prometheus_name,
    "pgb_size": c.POOLER_POOL_SIZE.prometheus_name,
    "pgb_client_count": c.POOLER_CLIENT_COUNT.prometheus_name,
    "pgb_client_max": c.POOLER_CLIENT_MAX.prometheus_name,
}
_IIT = "idle in transaction.*"  # both 'idle in transaction' and '... (aborted)'


# --- Go-template fragments (Prometheus alert templating) -----------------------------------
# PromQL inside printf uses single-quoted strings, so the Go strings need no escaping and the
# Helm variant no backticks.

def _query(fmt: str, *args: str) -> str:
    return f'printf "{fmt}" {" ".join(args)} | query'


def _scalar(fmt: str, *args: str, fn: str = "humanize", default: str = "0") -> str:
    """The first value of an instant query, humanized, or ``default`` if it returns nothing."""
    return ("{{ with " + _query(fmt, *args) + " }}{{ . | first | value | " + fn + " }}"
            "{{ else }}" + default + "{{ end }}")


_USABLE = _scalar("max(@max@{target=%q}) - max(@reserved@{target=%q})",
                  "$labels.target", "$labels.target", default="?")
_CLIENTS = _scalar("sum(@count@{target=%q})", "$labels.target")
_UTIL = _scalar("max(@util@{target=%q})", "$labels.target", fn="humanizePercentage",
                default="?")
_LARGEST_HOLDER = (
    "{{ with " + _query("topk(1, sum by (application_name) (@count@{target=%q}))",
                        "$labels.target") + " }}{{ with first . }}"
    "Largest holder: application_name {{ .Labels.application_name }} with "
    "{{ .Value | humanize }} connections, "
    + _scalar("sum(@count@{target=%q,application_name=%q,state='idle'})",
              "$labels.target", ".Labels.application_name")
    + " of them idle.{{ end }}{{ end }}"
)
_HOLDER = ("application_name {{ $labels.application_name }} "
           "from {{ $labels.client_addr }}")
_SESSION_HOLDER = ("application_name {{ $labels.application_name }} (user {{ $labels.usename }},"
                   " database {{ $labels.datname }}, client {{ $labels.client_addr }})")
_HOLDER_ARGS = ("$labels.target", "$labels.datname", "$labels.usename",
                "$labels.application_name", "$labels.client_addr")
_HOLDER_SEL = "target=%q,datname=%q,usename=%q,application_name=%q,client_addr=%q"
_NOT_MAX_CONNECTIONS = ("Raising max_connections only gives the holder more to hoard; "
                        "fix the client side.")


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    group: str
    severity: str
    expr: str
    for_: str
    summary: str
    description: str


def _alerts() -> tuple[Alert, ...]:
    conn, tx, agent = "pgconn-agent.connections", "pgconn-agent.transactions", "pgconn-agent.agent"
    usable_by_target = "max by (target) (@max@ - @reserved@)"
    return (
        Alert(
            "PostgreSQLConnectionsNearLimit", conn, "warning",
            "max by (target) (@util@) > [[near_limit_ratio]]",
            "near_limit_for_seconds",
            "PostgreSQL {{ $labels.target }}: {{ $value | humanizePercentage }} of usable "
            "connection slots in use",
            "{{ $labels.target }} has " + _CLIENTS + " client connections for " + _USABLE
            + " usable slots (max_connections minus reserved slots). " + _LARGEST_HOLDER
            + " Find out who holds the slots and why before they run out. "
            + _NOT_MAX_CONNECTIONS,
        ),
        Alert(
            "PostgreSQLConnectionsExhausted", conn, "critical",
            "max by (target) (@util@) > [[exhausted_ratio]]",
            "exhausted_for_seconds",
            "PostgreSQL {{ $labels.target }}: connection slots exhausted "
            "({{ $value | humanizePercentage }} in use)",
            "{{ $labels.target }} has " + _CLIENTS + " client connections for " + _USABLE
            + " usable slots; new connections are failing or about to fail with "
            "'remaining connection slots are reserved' or 'sorry, too many clients already' "
            "(Prisma P2037, node-postgres connect timeouts). " + _LARGEST_HOLDER
            + " " + _NOT_MAX_CONNECTIONS,
        ),
        Alert(
            "PostgreSQLApplicationHoldsMostSlots", conn, "warning",
            "(\n  sum by (target, application_name) (@count@)\n"
            "  > on (target) group_left ()\n"
            f"  ([[app_share_ratio]] * {usable_by_target})\n)\n"
            "and on (target)\n(max by (target) (@util@) > [[holder_filling_ratio]])",
            "holder_for_seconds",
            "PostgreSQL {{ $labels.target }}: application_name {{ $labels.application_name }} "
            "holds {{ $value | humanize }} of " + _USABLE + " usable connection slots",
            "application_name {{ $labels.application_name }} holds {{ $value | humanize }} of "
            + _USABLE + " usable slots on {{ $labels.target }} (server at " + _UTIL + "); "
            + _scalar("sum(@count@{target=%q,application_name=%q,state='idle'})",
                      "$labels.target", "$labels.application_name")
            + " of them are idle and "
            + _scalar(f"sum(@count@{{target=%q,application_name=%q,state=~'{_IIT}'}})",
                      "$labels.target", "$labels.application_name")
            + " idle in transaction. Largest hosts:"
            "{{ range $i, $s := " + _query("topk(3, sum by (client_addr) "
                                           "(@count@{target=%q,application_name=%q}))",
                                           "$labels.target", "$labels.application_name")
            + " | sortByLabel \"client_addr\" }}{{ if $i }},{{ end }} "
            "{{ $s.Labels.client_addr }} ({{ $s.Value | humanize }}){{ end }}. Mostly idle "
            "connections mean several client instances each with its own pool (one new "
            "PrismaClient() per module or request) or an over-sized pool. " + _NOT_MAX_CONNECTIONS,
        ),
        Alert(
            "PostgreSQLApplicationHostHoldsMostSlots", conn, "warning",
            "(\n  sum by (target, application_name, client_addr) (@count@)\n"
            "  > on (target) group_left ()\n"
            f"  ([[app_host_share_ratio]] * {usable_by_target})\n)\n"
            "and on (target)\n(max by (target) (@util@) > [[holder_filling_ratio]])",
            "holder_for_seconds",
            "PostgreSQL {{ $labels.target }}: " + _HOLDER + " holds {{ $value | humanize }} of "
            + _USABLE + " usable connection slots",
            _HOLDER + " holds {{ $value | humanize }} of " + _USABLE + " usable slots on "
            "{{ $labels.target }} (server at " + _UTIL + "); "
            + _scalar("sum(@count@{target=%q,application_name=%q,client_addr=%q,state='idle'})",
                      "$labels.target", "$labels.application_name", "$labels.client_addr")
            + " of them are idle and "
            + _scalar(f"sum(@count@{{target=%q,application_name=%q,client_addr=%q,"
                      f"state=~'{_IIT}'}})",
                      "$labels.target", "$labels.application_name", "$labels.client_addr")
            + " idle in transaction. One host holding most of the server usually runs several "
            "client instances (processes, workers or per-request clients) each with its own "
            "pool. " + _NOT_MAX_CONNECTIONS,
        ),
        Alert(
            "PostgreSQLIdleConnectionHoarding", conn, "warning",
            "(\n  sum by (target, application_name, client_addr) (@count@{state=\"idle\"})\n"
            "  >= [[idle_hoarding_connections]]\n)\n"
            "and on (target, application_name, client_addr)\n(\n"
            "  max by (target, application_name, client_addr) (@state_age@{state=\"idle\"})\n"
            "  > [[idle_hoarding_age_seconds]]\n)",
            "idle_hoarding_for_seconds",
            "PostgreSQL {{ $labels.target }}: " + _HOLDER + " keeps {{ $value | humanize }} "
            "connections idle",
            _HOLDER + " keeps {{ $value | humanize }} connections idle on {{ $labels.target }} "
            "(the oldest idle for "
            + _scalar("max(@state_age@{target=%q,application_name=%q,client_addr=%q,"
                      "state='idle'})",
                      "$labels.target", "$labels.application_name", "$labels.client_addr",
                      fn="humanizeDuration", default="?")
            + "), out of " + _USABLE + " usable slots. Connections that stay idle for minutes "
            "are pool capacity nobody uses: too many pools or a pool sized far above its "
            "concurrency.",
        ),
        Alert(
            "PostgreSQLConnectionChurn", conn, "warning",
            "sum by (target, application_name, client_addr) (rate(@opened@[5m]))\n"
            "> [[churn_per_second]]",
            "churn_for_seconds",
            "PostgreSQL {{ $labels.target }}: " + _HOLDER + " opens {{ $value | humanize }} "
            "connections per second",
            _HOLDER + " opens {{ $value | humanize }} new connections per second on "
            "{{ $labels.target }} (5-minute average). Each one costs a backend start and "
            "authentication; a client that connects per query, a pool whose idle timeout is "
            "shorter than the gap between requests, or a retry loop reconnecting on errors.",
        ),
        Alert(
            "PostgreSQLConnectionLimitNearlyReached", conn, "warning",
            "(\n  sum by (target, name) (label_replace(@count@, \"name\", \"$1\", \"usename\", "
            "\"(.*)\"))\n"
            "  / on (target, name) group_left (scope)\n"
            "  (max by (target, scope, name) (@limit@{scope=\"role\"}) > 0)\n"
            "  > [[connection_limit_ratio]]\n)\nor\n"
            "(\n  sum by (target, name) (label_replace(@count@, \"name\", \"$1\", \"datname\", "
            "\"(.*)\"))\n"
            "  / on (target, name) group_left (scope)\n"
            "  (max by (target, scope, name) (@limit@{scope=\"database\"}) > 0)\n"
            "  > [[connection_limit_ratio]]\n)",
            "connection_limit_for_seconds",
            "PostgreSQL {{ $labels.target }}: {{ $labels.scope }} {{ $labels.name }} is at "
            "{{ $value | humanizePercentage }} of its connection limit",
            "{{ $dim := \"datname\" }}{{ if eq $labels.scope \"role\" }}{{ $dim = \"usename\" }}"
            "{{ end }}The {{ $labels.scope }} {{ $labels.name }} on {{ $labels.target }} has "
            + _scalar("sum(@count@{target=%q,%s=%q})", "$labels.target", "$dim",
                      "$labels.name")
            + " connections of its limit of "
            + _scalar("max(@limit@{target=%q,scope=%q,name=%q})", "$labels.target",
                      "$labels.scope", "$labels.name", default="?")
            + " (rolconnlimit or datconnlimit); beyond it its clients get 'too many "
            "connections for {{ $labels.scope }} \"{{ $labels.name }}\"'. Largest holder:"
            "{{ with " + _query("topk(1, sum by (application_name, client_addr) "
                                "(@count@{target=%q,%s=%q}))",
                                "$labels.target", "$dim", "$labels.name")
            + " }}{{ with first . }} application_name {{ .Labels.application_name }} from "
            "{{ .Labels.client_addr }} with {{ .Value | humanize }}{{ end }}{{ end }}.",
        ),
        Alert(
            "PostgreSQLIdleInTransaction", tx, "warning",
            f"max by (target, datname, usename, application_name, client_addr) "
            f"(@state_age@{{state=~\"{_IIT}\"}})\n> [[idle_in_transaction_warning_seconds]]",
            "idle_in_transaction_for_seconds",
            "PostgreSQL {{ $labels.target }}: application_name {{ $labels.application_name }} "
            "has sessions idle in transaction for {{ $value | humanizeDuration }}",
            _iit_description(),
        ),
        Alert(
            "PostgreSQLIdleInTransaction", tx, "critical",
            f"max by (target, datname, usename, application_name, client_addr) "
            f"(@state_age@{{state=~\"{_IIT}\"}})\n> [[idle_in_transaction_critical_seconds]]",
            "idle_in_transaction_for_seconds",
            "PostgreSQL {{ $labels.target }}: application_name {{ $labels.application_name }} "
            "has sessions idle in transaction for {{ $value | humanizeDuration }}",
            _iit_description(),
        ),
        Alert(
            "PostgreSQLLongTransaction", tx, "warning",
            f"max by (target, datname, usename, application_name, client_addr) "
            f"(@xact_age@{{state!~\"{_IIT}\"}})\n> [[long_transaction_seconds]]",
            "long_transaction_for_seconds",
            "PostgreSQL {{ $labels.target }}: a transaction of application_name "
            "{{ $labels.application_name }} has been open for {{ $value | humanizeDuration }}",
            "A session of " + _SESSION_HOLDER + " on {{ $labels.target }} has had a transaction "
            "open for {{ $value | humanizeDuration }}. It holds its locks and the vacuum "
            "horizon for that long, and its connection stays taken.",
        ),
        Alert(
            "PostgreSQLLockWaitsPilingUp", tx, "warning",
            "sum by (target, datname, application_name) (@lock_waiting@)\n"
            ">= [[lock_waiting_sessions]]",
            "lock_waiting_for_seconds",
            "PostgreSQL {{ $labels.target }}: {{ $value | humanize }} sessions of "
            "application_name {{ $labels.application_name }} are waiting for locks",
            "{{ $value | humanize }} sessions of application_name {{ $labels.application_name }} "
            "in database {{ $labels.datname }} on {{ $labels.target }} are waiting for "
            "heavyweight locks, the longest for "
            + _scalar("max(@lock_wait_time@{target=%q,datname=%q,application_name=%q})",
                      "$labels.target", "$labels.datname", "$labels.application_name",
                      fn="humanizeDuration", default="?")
            + ". Each waiter keeps its connection. Direct blockers:"
            "{{ range $i, $s := " + _query("topk(3, sum by (application_name, client_addr, "
                                           "state) (@lock_blocking@{target=%q,datname=%q}))",
                                           "$labels.target", "$labels.datname")
            + " | sortByLabel \"state\" }}{{ if $i }},{{ end }} application_name "
            "{{ $s.Labels.application_name }} from {{ $s.Labels.client_addr }} "
            "({{ $s.Labels.state }}) blocks {{ $s.Value | humanize }}{{ end }}. A blocker that "
            "is idle in transaction is the root of its chain.",
        ),
        Alert(
            "PostgreSQLBlockedByIdleInTransaction", tx, "critical",
            f"sum by (target, datname, usename, application_name, client_addr) "
            f"(@lock_blocking@{{state=~\"{_IIT}\"}})\n"
            ">= [[blocked_by_idle_in_transaction_sessions]]",
            "blocked_by_idle_in_transaction_for_seconds",
            "PostgreSQL {{ $labels.target }}: idle-in-transaction sessions of "
            "application_name {{ $labels.application_name }} hold locks others wait for",
            "Sessions of " + _SESSION_HOLDER + " on {{ $labels.target }} are idle in "
            "transaction and hold locks others wait for: {{ $value | humanize }} directly, "
            + _scalar("sum(@lock_waiting@{target=%q,datname=%q})", "$labels.target",
                      "$labels.datname")
            + " waiting for locks in database {{ $labels.datname }} in all. The oldest has been "
            "idle for "
            + _scalar(f"max(@state_age@{{{_HOLDER_SEL},state=~'{_IIT}'}})", *_HOLDER_ARGS,
                      fn="humanizeDuration", default="?")
            + ". The blocker does nothing and will not release the locks until its client "
            "commits, rolls back or disconnects; lock or transaction timeouts in the waiters do "
            "not help.",
        ),
        Alert(
            "PgconnAgentTargetDown", agent, "critical",
            "@up@ == 0",
            "agent_down_for_seconds",
            "pgconn-agent cannot poll PostgreSQL target {{ $labels.target }}",
            "pgconn-agent's polls of {{ $labels.target }} fail (recent errors:"
            "{{ range $i, $s := " + _query("sum by (error) (increase(@errors@{target=%q}[10m]))"
                                           " > 0", "$labels.target")
            + " | sortByLabel \"error\" }}{{ if $i }},{{ end }} {{ $s.Labels.error }}{{ end }}), "
            "so its connection pressure is not visible. too_many_connections means the server "
            "is full: that is the incident itself.",
        ),
        Alert(
            "PgconnAgentPollsFailing", agent, "warning",
            "(\n  sum by (target, error) (increase(@errors@[10m]))\n"
            "  >= [[poll_errors_per_10m]]\n)\nunless on (target)\n(@up@ == 0)",
            "poll_errors_for_seconds",
            "pgconn-agent: polls of {{ $labels.target }} fail with {{ $labels.error }}",
            "{{ $value | humanize }} polls of {{ $labels.target }} failed with "
            "{{ $labels.error }} in the last 10 minutes while others succeed; the metrics of "
            "{{ $labels.target }} have gaps.",
        ),
        Alert(
            "PgconnAgentGroupsFolded", agent, "warning",
            "@folded@ > 0",
            "groups_folded_for_seconds",
            "pgconn-agent: {{ $value | humanize }} groups of {{ $labels.target }} are folded "
            "by the cardinality cap",
            "{{ $value | humanize }} holder groups of {{ $labels.target }} exceed the agent's "
            "cardinality cap and are reported as one overflow group, so their application, "
            "host and user are not visible. Raise the cap or drop a dimension (often "
            "client_addr) in the agent's configuration.",
        ),
        Alert(
            "PgconnAgentSessionsHidden", agent, "warning",
            "@hidden@ > 0",
            "sessions_hidden_for_seconds",
            "pgconn-agent cannot see {{ $value | humanize }} sessions of {{ $labels.target }}",
            "The agent's role on {{ $labels.target }} cannot see the state, client address "
            "or query of {{ $value | humanize }} client sessions, so they are counted as "
            "(hidden) and cannot be attributed. Grant the role pg_monitor.",
        ),
        Alert(
            "PgconnAgentAbsent", agent, "critical",
            "absent(@up@)",
            "agent_absent_for_seconds",
            "pgconn-agent metrics are absent",
            "No pgconn-agent target reports " + c.AGENT_UP.prometheus_name + ": the agent is "
            "not running, or Prometheus does not scrape it. Connection pressure on the "
            "PostgreSQL servers it watches goes unnoticed.",
        ),
    )


def _iit_description() -> str:
    return (
        _scalar(f"sum(@count@{{{_HOLDER_SEL},state=~'{_IIT}'}})", *_HOLDER_ARGS)
        + " sessions of " + _SESSION_HOLDER + " on {{ $labels.target }} are idle in "
        "transaction, the oldest for {{ $value | humanizeDuration }}. Each holds its connection, "
        "its locks and the vacuum horizon while doing nothing: a transaction left open across "
        "an await, a network call or an error path. Sessions waiting directly for their locks: "
        + _scalar(f"sum(@lock_blocking@{{{_HOLDER_SEL},state=~'{_IIT}'}})", *_HOLDER_ARGS)
        + "."
    )


def _pooler_alerts() -> tuple[Alert, ...]:
    """PgBouncer targets: clients queueing for a pool's server connections, and the client
    limit. Labels of a pool: target, database, user."""
    group, pool = "pgconn-agent.pgbouncer", "target=%q,database=%q,user=%q"
    args = ("$labels.target", "$labels.database", "$labels.user")
    return (
        Alert(
            "PgBouncerClientsWaiting", group, "warning",
            "max by (target, database, user) (@pgb_wait@) > [[pgbouncer_wait_seconds]]\n"
            "and on (target, database, user)\n"
            "sum by (target, database, user) (@pgb_clients@{state=\"waiting\"}) > 0",
            "pgbouncer_wait_for_seconds",
            "PgBouncer {{ $labels.target }}: clients of pool {{ $labels.database }}/"
            "{{ $labels.user }} wait {{ $value | humanizeDuration }} for a server connection",
            _scalar(f"sum(@pgb_clients@{{{pool},state='waiting'}})", *args)
            + " clients of pool {{ $labels.database }}/{{ $labels.user }} on PgBouncer "
            "{{ $labels.target }} are waiting for a server connection, the longest for "
            "{{ $value | humanizeDuration }}; the pool has "
            + _scalar(f"sum(@pgb_servers@{{{pool},state='active'}})", *args)
            + " active server connections of its size "
            + _scalar(f"max(@pgb_size@{{{pool}}})", *args, default="?")
            + ". Waiting:{{ range $i, $s := "
            + _query(f"topk(3, sum by (application_name) (@pgb_client_count@{{{pool},"
                     f"state='waiting'}}))", *args)
            + " | sortByLabel \"application_name\" }}{{ if $i }},{{ end }} application_name "
            "{{ $s.Labels.application_name }} ({{ $s.Value | humanize }}){{ end }}. The pool is "
            "at its size: find what keeps its server connections busy (long or idle "
            "transactions, session pool mode) before raising pool_size.",
        ),
        Alert(
            "PgBouncerClientLimitNear", group, "warning",
            "sum by (target) (@pgb_client_count@)\n"
            "/ on (target) max by (target) (@pgb_client_max@)\n"
            "> [[pgbouncer_client_limit_ratio]]",
            "pgbouncer_client_limit_for_seconds",
            "PgBouncer {{ $labels.target }}: {{ $value | humanizePercentage }} of "
            "max_client_conn in use",
            "PgBouncer {{ $labels.target }} holds "
            + _scalar("sum(@pgb_client_count@{target=%q})", "$labels.target")
            + " client connections of max_client_conn "
            + _scalar("max(@pgb_client_max@{target=%q})", "$labels.target", default="?")
            + "; beyond it new clients are refused ('no more connections allowed'). Largest:"
            "{{ with " + _query("topk(1, sum by (application_name, client_addr) "
                                "(@pgb_client_count@{target=%q}))", "$labels.target")
            + " }}{{ with first . }} application_name {{ .Labels.application_name }} from "
            "{{ .Labels.client_addr }} with {{ .Value | humanize }}{{ end }}{{ end }}.",
        ),
    )


ALERTS: tuple[Alert, ...] = _alerts() + _pooler_alerts()
ALERT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(a.name for a in ALERTS))


# --- rendering --------------------------------------------------------------------------------

def _metrics(text: str) -> str:
    return re.sub(r"@(\w+)@", lambda m: _METRICS[m.group(1)], text)


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def duration(seconds: float) -> str:
    """A Prometheus duration string for a number of seconds (``300`` -> ``5m``)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out


def validate_overrides(overrides: Mapping[str, float]) -> dict[str, float]:
    """The effective thresholds; unknown names and negative or non-finite values are errors."""
    out = dict(DEFAULTS)
    for name, value in overrides.items():
        if name not in DEFAULTS:
            raise ConfigError(f"unknown alert threshold {name!r}; known: {', '.join(DEFAULTS)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"alert threshold {name}: expected a number, found {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"alert threshold {name}: expected a finite number >= 0, "
                              f"found {value!r}")
        out[name] = float(value)
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, float]:
    """``["near_limit_ratio=0.7", ...]`` (the CLI's ``--set``) into a validated dict."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE")
        try:
            out[name] = float(raw)
        except ValueError:
            raise ConfigError(f"--set {item}: expected a number, found {raw.strip()!r}") from None
    validate_overrides(out)
    return out


def _fill(text: str, ref: Any) -> str:
    return re.sub(r"\[\[(\w+)\]\]", lambda m: str(ref(m.group(1))), text)


def _groups(threshold: Any, for_: Any, annotation: Any, runbook_base: str
            ) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in ALERTS:
        groups.setdefault(a.group, []).append({
            "alert": a.name,
            "expr": _Code(_fill(_metrics(a.expr), threshold)),
            "for": for_(a.for_),
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": _Prose(annotation(_metrics(a.summary))),
                "description": _Prose(annotation(_metrics(a.description))),
                "runbook_url": f"{runbook_base}#{a.name.lower()}",
            },
        })
    return [{"name": name, "rules": rules} for name, rules in groups.items()]


def rule_groups(overrides: Mapping[str, float] | None = None, *,
                runbook_base: str = RUNBOOK_BASE) -> list[dict[str, Any]]:
    """The rule groups as data (the ``groups:`` list of a Prometheus rule file)."""
    values = validate_overrides(overrides or {})
    return _groups(lambda n: _number(values[n]), lambda n: duration(values[n]),
                   lambda s: s, runbook_base)


_WIDTH = 100


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


class _Prose(str):
    """An annotation: long ones are folded (``>-``) so the file stays readable."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _prose(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = ">" if len(data) > _WIDTH - 20 and "\n" not in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style=style)


class _Code(str):
    """A PromQL expression: never folded, so Helm actions in it stay on one line."""


def _code(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data or "{{" in data or len(data) > _WIDTH - 20 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style=style)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(_Code, _code)
_Dumper.add_representer(_Prose, _prose)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=_WIDTH, allow_unicode=True,
                     default_flow_style=False)


def render_rules(overrides: Mapping[str, float] | None = None, *,
                 runbook_base: str = RUNBOOK_BASE) -> str:
    """The Prometheus rule file (YAML text), thresholds from ``DEFAULTS`` updated by ``overrides``.

    ``overrides`` maps names of ``THRESHOLDS`` to numbers (``*_for_seconds`` in seconds);
    unknown names raise ``ConfigError``. ``render_rules({})`` is the committed rule file.
    """
    values = validate_overrides(overrides or {})
    changed = {k: v for k, v in values.items() if v != DEFAULTS[k]}
    head = ["# Generated by agent/alert_rules.py; do not edit by hand.",
            "# Change thresholds with: pgconn-agent rules --set NAME=VALUE ... > FILE"]
    if changed:
        head.append("# Overridden: " + ", ".join(f"{k}={_number(v)}"
                                                  for k, v in changed.items()))
    groups = rule_groups(values, runbook_base=runbook_base)
    return "\n".join(head) + "\n" + _dump({"groups": groups})


def _helm_escape(text: str) -> str:
    """Prometheus template text made literal for Helm: ``{{`` ... ``}}`` raw-string actions."""
    if "{{" not in text and "}}" not in text:
        return text
    if "`" in text:
        raise ValueError("annotation text must not contain backticks")
    return "{{`" + text + "`}}"


def render_rules_helm(*, values_path: str = HELM_VALUES_PATH, indent: int = 0,
                      runbook_base: str = RUNBOOK_BASE) -> str:
    """The rules as a Helm template: the ``groups:`` document of the rule file.

    Contract for the chart:

    - Every threshold ``X`` of ``THRESHOLDS`` is read as ``{{ <values_path>.X }}``
      (default ``.Values.alerts.thresholds.X``); ``helm_values()`` gives the defaults to put
      in ``values.yaml`` under that key. ``*_for_seconds`` values must be whole seconds
      (rendered as ``for: '<value>s'``).
    - Prometheus' own ``{{ $labels.x }}`` templates are escaped as ``{{`...`}}`` so Helm
      outputs them verbatim.
    - The text starts with ``groups:`` at column ``indent`` (e.g. ``indent=2`` to place it
      under ``spec:`` of a PrometheusRule) and contains no other Helm actions, so it can be
      wrapped in ``{{- if .Values.alerts.enabled }}`` by the chart's template file.

    ``helm template`` with the default values yields exactly ``render_rules({})``'s groups.
    """
    groups = _groups(lambda n: "{{ " + values_path + "." + n + " }}",
                     lambda n: "{{ " + values_path + "." + n + " }}s",
                     _helm_escape, runbook_base)
    text = _dump({"groups": groups})
    pad = " " * indent
    return "".join(pad + line if line.strip() else line
                   for line in text.splitlines(keepends=True))


def helm_values() -> dict[str, float | int]:
    """Defaults for ``.Values.alerts.thresholds`` (whole numbers as ints)."""
    return {t.name: int(t.default) if t.default == int(t.default) else t.default
            for t in THRESHOLDS}


def thresholds_markdown() -> str:
    """The thresholds as a Markdown table (kept in ``alerts/README.md``)."""
    rows = ["| name | default | unit | meaning |", "|---|---|---|---|"]
    for t in THRESHOLDS:
        default = _number(t.default)
        if t.is_duration:
            default += f" ({duration(t.default)})"
        rows.append(f"| `{t.name}` | {default} | {t.unit} | {t.description} |")
    return "\n".join(rows) + "\n"
