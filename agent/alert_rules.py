"""Prometheus alert rules for connection pressure, generated from the metric contract.

One alert per cause: when one cause explains another alert (a full server explains "near the
limit" and "one application holds most slots"; a holder idle in transaction that blocks others
explains its own idle-in-transaction and lock-wait alerts), the other alert's expression says
``unless`` that cause, so the page carries one alert per cause without Alertmanager inhibitions.

The committed ``alerts/pgconn-agent.rules.yml`` is ``render_rules({})``; a test fails when it
drifts. Public surface:

- ``THRESHOLDS`` / ``DEFAULTS``: every tunable (thresholds and ``for`` durations), documented.
- ``Settings``: mixin-style settings (a selector, grouping labels, the runbook base URL).
- ``render_rules(overrides, settings)``: the rule file (YAML text); this is what
  ``pgconn-agent rules --set NAME=VALUE ...`` prints (``parse_sets`` turns the ``--set``
  strings into overrides and settings).
- ``render_rules_helm(...)``: the same rules as a Helm template whose thresholds and settings
  come from ``.Values.alerts`` and whose Prometheus templates are escaped for Helm.
- ``rule_groups(overrides, settings)``: the rule groups as plain data.

Metric names are read from ``agent.contract`` only; nothing here spells one out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import contract as c
from .errors import ConfigError

RUNBOOK_BASE = "https://github.com/pgconn-agent/pgconn-agent/blob/main/docs/runbooks.md"
RULE_FILE = "alerts/pgconn-agent.rules.yml"
HELM_VALUES_PATH = ".Values.alerts"


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
       "Client backends / usable slots above which PostgreSQLConnectionsExhausted fires (and "
       "replaces the near-limit and holder alerts of the target)."),
    _t("exhausted_for_seconds", 60, "seconds", "`for` duration of PostgreSQLConnectionsExhausted."),
    _t("app_share_ratio", 0.5, "ratio",
       "Share of usable slots one application_name must hold for "
       "PostgreSQLApplicationHoldsMostSlots."),
    _t("app_host_share_ratio", 0.5, "ratio",
       "Share of usable slots one application_name on one client_addr must hold for "
       "PostgreSQLApplicationHostHoldsMostSlots (only when the application also has other "
       "hosts)."),
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
       "Oldest idle-in-transaction age for PostgreSQLIdleInTransaction (critical, replaces "
       "the warning)."),
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
       "Sessions queued behind one holder's root blockers that are idle in transaction, for "
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
    _t("polls_stalled_for_seconds", 60, "seconds", "`for` duration of PgconnAgentPollsStalled."),
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
ORDERED_PAIRS: tuple[tuple[str, str], ...] = (
    ("near_limit_ratio", "exhausted_ratio"),
    ("idle_in_transaction_warning_seconds", "idle_in_transaction_critical_seconds"),
)
"""Pairs (warning, critical): the first must stay below the second."""

# --- mixin-style settings --------------------------------------------------------------------

_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_MATCHER = _LABEL + r'\s*(?:=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"'
SELECTOR_PATTERN = rf"^(?:\s*{_MATCHER}(?:\s*,\s*{_MATCHER})*\s*)?$"
"""A PromQL label-matcher list without braces (``job="pgconn-agent",env=~"prod.*"``)."""
LABEL_PATTERN = rf"^{_LABEL}$"
RESERVED_LABELS: frozenset[str] = frozenset(
    ("target", "pid", "error", "scope", "name", "le", "alertname", "severity",
     *c.GROUP_DIMENSIONS, "database", "user"))
"""Labels the alerts aggregate by themselves: not grouping labels."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the rules look and how they group, like a monitoring mixin's ``_config``.

    ``selector`` is added to every metric the expressions read (e.g. ``job="pgconn-agent"``);
    ``group_by`` labels (e.g. ``cluster``, ``job``) go into every ``by``/``on`` next to
    ``target``, so two clusters scraped under one target name stay apart, and into the
    annotations' lookups; ``runbook_base`` is the URL of docs/runbooks.md.
    """

    selector: str = ""
    group_by: tuple[str, ...] = ()
    runbook_base: str = RUNBOOK_BASE

    def __post_init__(self) -> None:
        if not re.match(SELECTOR_PATTERN, self.selector):
            raise ConfigError(f"alert setting selector: expected label matchers such as "
                              f'job="pgconn-agent", found {self.selector!r}')
        for label in self.group_by:
            if not re.match(LABEL_PATTERN, label) or label in RESERVED_LABELS:
                raise ConfigError(f"alert setting group_by: expected label names the alerts do "
                                  f"not use themselves, found {label!r}")
        if len(set(self.group_by)) != len(self.group_by):
            raise ConfigError(f"alert setting group_by: repeated label in {self.group_by!r}")
        if not re.match(r"^https?://\S+$", self.runbook_base) or "#" in self.runbook_base:
            raise ConfigError(f"alert setting runbook_base: expected an http(s) URL without "
                              f"'#', found {self.runbook_base!r}")


SETTING_NAMES: tuple[str, ...] = ("selector", "group_by", "runbook_base")

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
    "root_blocking": c.LOCK_ROOT_BLOCKING.prometheus_name,
    "root_blocker": c.LOCK_ROOT_BLOCKER.prometheus_name,
    "limit": c.CONNECTION_LIMIT.prometheus_name,
    "opened": c.CONNECTION_OPENED.prometheus_name,
    "up": c.AGENT_UP.prometheus_name,
    "errors": c.POLL_ERRORS.prometheus_name,
    "skipped": c.POLL_SKIPPED.prometheus_name,
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

# Tokens the dialects (plain file, Helm template) expand:
#   <T>   target and the grouping labels, in expression label lists
#   <J>   job, instance and the grouping labels (the agent's own absence)
#   <GF>  the grouping labels as printf matchers after ``target=%q`` in annotation lookups
#   <GA>  the matching ``$labels.x`` printf arguments after ``$labels.target``
#   @m@{matchers} a contract metric; in expressions the selector joins its matchers
#   [[name]] a threshold
_H = "<T>, datname, usename, application_name, client_addr"
_HOLDER_BY = "<T>, application_name, client_addr"


# --- Go-template fragments (Prometheus alert templating) -----------------------------------
# PromQL inside printf uses single-quoted strings, so the Go strings need no escaping and the
# Helm variant no backticks. Lookups match the alert's own target and grouping labels.

def _query(fmt: str, *args: str) -> str:
    fmt = fmt.replace("target=%q", "target=%q<GF>")
    args = tuple(a + "<GA>" if a == "$labels.target" else a for a in args)
    return f'printf "{fmt}" {" ".join(args)} | query'


def _scalar(fmt: str, *args: str, fn: str = "humanize", default: str = "0") -> str:
    """The first value of an instant query, humanized, or ``default`` if it returns nothing."""
    return ("{{ with " + _query(fmt, *args) + " }}{{ . | first | value | " + fn + " }}"
            "{{ else }}" + default + "{{ end }}")


def _list(fmt: str, args: tuple[str, ...], item: str, sort_label: str,
          empty: str = "") -> str:
    """`` item, item`` over an instant query's samples (``$s``), sorted by one label."""
    return ("{{ range $i, $s := " + _query(fmt, *args) + f' | sortByLabel "{sort_label}" }}}}'
            "{{ if $i }},{{ end }} " + item + ("{{ else }}" + empty if empty else "")
            + "{{ end }}")


_USABLE = _scalar("max(@max@{target=%q}) - max(@reserved@{target=%q})",
                  "$labels.target", "$labels.target", default="?")
_CLIENTS = _scalar("sum(@count@{target=%q})", "$labels.target")
_UTIL = _scalar("max(@util@{target=%q})", "$labels.target", fn="humanizePercentage",
                default="?")
_TOP_APP = _query("topk(1, sum by (application_name) (@count@{target=%q}))", "$labels.target")
_LARGEST_HOLDER = (
    "{{ with " + _TOP_APP + " }}{{ with first . }}"
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

# --- conditions other alerts step aside for ----------------------------------------------------

_UTIL_BY_T = "max by (<T>) (@util@)"
_EXHAUSTED = f"{_UTIL_BY_T} > [[exhausted_ratio]]"
_IIT_ROOTS = (f"sum by ({_H}) (@root_blocking@{{state=~\"{_IIT}\"}})\n"
              ">= [[blocked_by_idle_in_transaction_sessions]]")
_STALLED = ("(\n  max by (<T>) (@up@) == 0\n  and on (<T>)\n"
            "  sum by (<T>) (increase(@errors@{error=\"timeout\"}[10m])) > 0\n)\n"
            "or on (<T>)\n(sum by (<T>) (increase(@skipped@[5m])) > 0)")


def _unless(expr: str, on: str, condition: str) -> str:
    """``expr`` unless ``condition`` holds for the same ``on`` labels (inhibition in PromQL)."""
    return f"(\n{_indent(expr)}\n)\nunless on ({on})\n(\n{_indent(condition)}\n)"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    group: str
    severity: str
    expr: str
    for_: str
    summary: str
    description: str


_CONN, _TX, _AGENT = "pgconn-agent.connections", "pgconn-agent.transactions", "pgconn-agent.agent"
_POOLER = "pgconn-agent.pgbouncer"


# --- connections: one factory per shape -------------------------------------------------------

def _slots(name: str, severity: str, expr: str, for_: str, summary: str, consequence: str
           ) -> Alert:
    """A target-level alert on slot utilization: counts, the largest holder, the right fix."""
    return Alert(
        name, _CONN, severity, expr, for_,
        "PostgreSQL {{ $labels.target }}: " + summary,
        "{{ $labels.target }} has " + _CLIENTS + " client connections for " + _USABLE
        + " usable slots (max_connections minus reserved slots)" + consequence + " "
        + _LARGEST_HOLDER + " " + _NOT_MAX_CONNECTIONS,
    )


def _holding(by: str, share: str) -> str:
    """Holders (grouped ``by``) above ``share`` of the usable slots of a filling server."""
    usable = "max by (<T>) (@max@ - @reserved@)"
    return (f"(\n  sum by ({by}) (@count@)\n  > on (<T>) group_left ()\n"
            f"  ([[{share}]] * {usable})\n)\n"
            f"and on (<T>)\n({_UTIL_BY_T} > [[holder_filling_ratio]])")


_APP_BY = "<T>, application_name"
_APP_HOLDS = _holding(_APP_BY, "app_share_ratio")


def _holds_most(name: str, by: str, share: str, who: str, sel: str, args: tuple[str, ...],
                said_already: tuple[str, str] | None, extra_text: str) -> Alert:
    """One holder (an application, or an application on one host) holds most usable slots."""
    expr = _unless(_holding(by, share), "<T>", _EXHAUSTED)
    if said_already is not None:
        expr = _unless(expr, *said_already)
    return Alert(
        name, _CONN, "warning", expr, "holder_for_seconds",
        "PostgreSQL {{ $labels.target }}: " + who + " holds {{ $value | humanize }} of "
        + _USABLE + " usable connection slots",
        who + " holds {{ $value | humanize }} of " + _USABLE + " usable slots on "
        "{{ $labels.target }} (server at " + _UTIL + "); "
        + _scalar(f"sum(@count@{{{sel},state='idle'}})", *args)
        + " of them are idle and "
        + _scalar(f"sum(@count@{{{sel},state=~'{_IIT}'}})", *args)
        + " idle in transaction. " + extra_text + " " + _NOT_MAX_CONNECTIONS,
    )


def _connection_alerts() -> tuple[Alert, ...]:
    app_args = ("$labels.target", "$labels.application_name")
    host_args = (*app_args, "$labels.client_addr")
    return (
        _slots("PostgreSQLConnectionsNearLimit", "warning",
               # One application holding most slots pages as that application's alert.
               _unless(f"{_UTIL_BY_T} > [[near_limit_ratio]] <= [[exhausted_ratio]]", "<T>",
                       _APP_HOLDS),
               "near_limit_for_seconds",
               "{{ $value | humanizePercentage }} of usable connection slots in use",
               ". Find out who holds the slots and why before they run out."),
        _slots("PostgreSQLConnectionsExhausted", "critical", _EXHAUSTED,
               "exhausted_for_seconds",
               "connection slots exhausted ({{ $value | humanizePercentage }} in use)"
               "{{ with " + _TOP_APP + " }}{{ with first . }}, application_name "
               "{{ .Labels.application_name }} holds {{ .Value | humanize }}{{ end }}{{ end }}",
               "; new connections are failing or about to fail with 'remaining connection "
               "slots are reserved' or 'sorry, too many clients already' (Prisma P2037, "
               "node-postgres connect timeouts)."),
        _holds_most(
            "PostgreSQLApplicationHoldsMostSlots", _APP_BY, "app_share_ratio",
            "application_name {{ $labels.application_name }}",
            "target=%q,application_name=%q", app_args, None,
            "Largest hosts:" + _list("topk(3, sum by (client_addr) "
                                     "(@count@{target=%q,application_name=%q}))", app_args,
                                     "{{ $s.Labels.client_addr }} ({{ $s.Value | humanize }})",
                                     "client_addr")
            + ". Mostly idle connections mean several client instances each with its own pool "
            "(one new PrismaClient() per module or request) or an over-sized pool."),
        _holds_most(
            "PostgreSQLApplicationHostHoldsMostSlots", _HOLDER_BY, "app_host_share_ratio",
            _HOLDER, "target=%q,application_name=%q,client_addr=%q", host_args,
            # Said already by the application alert when the application has no other host.
            ("<T>, application_name", "count by (<T>, application_name) (\n"
             "  sum by (<T>, application_name, client_addr) (@count@)\n) == 1"),
            "Its application also connects from other hosts; this one holds most of the "
            "server, usually several client instances (processes, workers or per-request "
            "clients) each with its own pool."),
        Alert(
            "PostgreSQLIdleConnectionHoarding", _CONN, "warning",
            # Exhausted, or one application holding most slots: that alert counts the idle.
            _unless(_unless(f"(\n  sum by ({_HOLDER_BY}) (@count@{{state=\"idle\"}})\n"
                            "  >= [[idle_hoarding_connections]]\n)\n"
                            f"and on ({_HOLDER_BY})\n(\n"
                            f"  max by ({_HOLDER_BY}) (@state_age@{{state=\"idle\"}})\n"
                            "  > [[idle_hoarding_age_seconds]]\n)", "<T>", _EXHAUSTED),
                    _APP_BY, _APP_HOLDS),
            "idle_hoarding_for_seconds",
            "PostgreSQL {{ $labels.target }}: " + _HOLDER + " keeps {{ $value | humanize }} "
            "connections idle",
            _HOLDER + " keeps {{ $value | humanize }} connections idle on {{ $labels.target }} "
            "(the oldest idle for "
            + _scalar("max(@state_age@{target=%q,application_name=%q,client_addr=%q,"
                      "state='idle'})", *host_args, fn="humanizeDuration", default="?")
            + "), out of " + _USABLE + " usable slots. Connections that stay idle for minutes "
            "are pool capacity nobody uses: too many pools or a pool sized far above its "
            "concurrency.",
        ),
        Alert(
            "PostgreSQLConnectionChurn", _CONN, "warning",
            f"sum by ({_HOLDER_BY}) (rate(@opened@[5m]))\n> [[churn_per_second]]",
            "churn_for_seconds",
            "PostgreSQL {{ $labels.target }}: " + _HOLDER + " opens {{ $value | humanize }} "
            "connections per second",
            _HOLDER + " opens {{ $value | humanize }} new connections per second on "
            "{{ $labels.target }} (5-minute average). Each one costs a backend start and "
            "authentication; a client that connects per query, a pool whose idle timeout is "
            "shorter than the gap between requests, or a retry loop reconnecting on errors.",
        ),
        _limit_alert(),
    )


def _limit_alert() -> Alert:
    def ratio(scope: str, dim: str) -> str:
        return (f"(\n  sum by (<T>, name) (label_replace(@count@, \"name\", \"$1\", \"{dim}\", "
                "\"(.*)\"))\n"
                "  / on (<T>, name) group_left (scope)\n"
                f"  (max by (<T>, scope, name) (@limit@{{scope=\"{scope}\"}}) > 0)\n"
                "  > [[connection_limit_ratio]]\n)")

    return Alert(
        "PostgreSQLConnectionLimitNearlyReached", _CONN, "warning",
        ratio("role", "usename") + "\nor\n" + ratio("database", "datname"),
        "connection_limit_for_seconds",
        "PostgreSQL {{ $labels.target }}: {{ $labels.scope }} {{ $labels.name }} is at "
        "{{ $value | humanizePercentage }} of its connection limit",
        "{{ $dim := \"datname\" }}{{ if eq $labels.scope \"role\" }}{{ $dim = \"usename\" }}"
        "{{ end }}The {{ $labels.scope }} {{ $labels.name }} on {{ $labels.target }} has "
        + _scalar("sum(@count@{target=%q,%s=%q})", "$labels.target", "$dim", "$labels.name")
        + " connections of its limit of "
        + _scalar("max(@limit@{target=%q,scope=%q,name=%q})", "$labels.target",
                  "$labels.scope", "$labels.name", default="?")
        + " (rolconnlimit or datconnlimit); beyond it its clients get 'too many "
        "connections for {{ $labels.scope }} \"{{ $labels.name }}\"'. Largest holder:"
        "{{ with " + _query("topk(1, sum by (application_name, client_addr) "
                            "(@count@{target=%q,%s=%q}))", "$labels.target", "$dim",
                            "$labels.name")
        + " }}{{ with first . }} application_name {{ .Labels.application_name }} from "
        "{{ .Labels.client_addr }} with {{ .Value | humanize }}{{ end }}{{ end }}.",
    )


# --- transactions ------------------------------------------------------------------------------

def _idle_in_transaction(severity: str, above: str, below: str | None) -> Alert:
    """Warning and critical are one alert: the critical one replaces the warning (``<=``)."""
    age = f"max by ({_H}) (@state_age@{{state=~\"{_IIT}\"}})\n> [[{above}]]"
    if below is not None:
        age += f" <= [[{below}]]"
    return Alert(
        "PostgreSQLIdleInTransaction", _TX, severity,
        # A holder whose idle transaction blocks others pages as BlockedByIdleInTransaction.
        _unless(age, _H, _IIT_ROOTS), "idle_in_transaction_for_seconds",
        "PostgreSQL {{ $labels.target }}: application_name {{ $labels.application_name }} "
        "has sessions idle in transaction for {{ $value | humanizeDuration }}",
        _scalar(f"sum(@count@{{{_HOLDER_SEL},state=~'{_IIT}'}})", *_HOLDER_ARGS)
        + " sessions of " + _SESSION_HOLDER + " on {{ $labels.target }} are idle in "
        "transaction, the oldest for {{ $value | humanizeDuration }}. Each holds its "
        "connection, its locks and the vacuum horizon while doing nothing: a transaction left "
        "open across an await, a network call or an error path.",
    )


_ROOT_PIDS = _list(
    f"sort_desc(@root_blocker@{{{_HOLDER_SEL},state=~'{_IIT}'}})", _HOLDER_ARGS,
    "pid {{ $s.Labels.pid }} ({{ $s.Value | humanize }} queued behind it): "
    "SELECT pg_terminate_backend({{ $s.Labels.pid }})", "pid",
    " not among the root blockers the agent names; run pgconn-agent diagnose")


def _transaction_alerts() -> tuple[Alert, ...]:
    db_app_args = ("$labels.target", "$labels.datname", "$labels.application_name")
    return (
        _idle_in_transaction("warning", "idle_in_transaction_warning_seconds",
                             "idle_in_transaction_critical_seconds"),
        _idle_in_transaction("critical", "idle_in_transaction_critical_seconds", None),
        Alert(
            "PostgreSQLLongTransaction", _TX, "warning",
            f"max by ({_H}) (@xact_age@{{state!~\"{_IIT}\"}})\n> [[long_transaction_seconds]]",
            "long_transaction_for_seconds",
            "PostgreSQL {{ $labels.target }}: a transaction of application_name "
            "{{ $labels.application_name }} has been open for {{ $value | humanizeDuration }}",
            "A session of " + _SESSION_HOLDER + " on {{ $labels.target }} has had a "
            "transaction open for {{ $value | humanizeDuration }}. It holds its locks and the "
            "vacuum horizon for that long, and its connection stays taken.",
        ),
        Alert(
            "PostgreSQLLockWaitsPilingUp", _TX, "warning",
            # Waits behind a root idle in transaction page as BlockedByIdleInTransaction.
            _unless("sum by (<T>, datname, application_name) (@lock_waiting@)\n"
                    ">= [[lock_waiting_sessions]]", "<T>, datname",
                    f"sum by (<T>, datname) (@root_blocking@{{state=~\"{_IIT}\"}})\n"
                    ">= [[blocked_by_idle_in_transaction_sessions]]"),
            "lock_waiting_for_seconds",
            "PostgreSQL {{ $labels.target }}: {{ $value | humanize }} sessions of "
            "application_name {{ $labels.application_name }} are waiting for locks",
            "{{ $value | humanize }} sessions of application_name "
            "{{ $labels.application_name }} in database {{ $labels.datname }} on "
            "{{ $labels.target }} are waiting for heavyweight locks, the longest for "
            + _scalar("max(@lock_wait_time@{target=%q,datname=%q,application_name=%q})",
                      *db_app_args, fn="humanizeDuration", default="?")
            + ". Each waiter keeps its connection. Root blockers (holding the lock, waiting "
            "for nothing):"
            + _list("topk(3, sum by (application_name, client_addr, state) "
                    "(@root_blocking@{target=%q,datname=%q}))",
                    ("$labels.target", "$labels.datname"),
                    "application_name {{ $s.Labels.application_name }} from "
                    "{{ $s.Labels.client_addr }} ({{ $s.Labels.state }}) with "
                    "{{ $s.Value | humanize }} queued", "state", " none visible")
            + ". Fix the root: the sessions between it and the waiters only pass the wait on.",
        ),
        Alert(
            "PostgreSQLBlockedByIdleInTransaction", _TX, "critical", _IIT_ROOTS,
            "blocked_by_idle_in_transaction_for_seconds",
            "PostgreSQL {{ $labels.target }}: an idle transaction of application_name "
            "{{ $labels.application_name }} blocks {{ $value | humanize }} sessions",
            "Sessions of " + _SESSION_HOLDER + " on {{ $labels.target }} are idle in "
            "transaction and hold locks {{ $value | humanize }} sessions queue behind ("
            + _scalar("sum(@lock_waiting@{target=%q,datname=%q})", "$labels.target",
                      "$labels.datname")
            + " waiting for locks in database {{ $labels.datname }} in all); "
            + _scalar(f"sum(@count@{{{_HOLDER_SEL},state=~'{_IIT}'}})", *_HOLDER_ARGS)
            + " of its sessions are idle in transaction, the oldest for "
            + _scalar(f"max(@state_age@{{{_HOLDER_SEL},state=~'{_IIT}'}})", *_HOLDER_ARGS,
                      fn="humanizeDuration", default="?")
            + ". Root blocker:" + _ROOT_PIDS + ". The blocker does nothing and will not "
            "release the locks until its client commits, rolls back or disconnects; lock or "
            "transaction timeouts in the waiters do not help. Terminating it rolls its "
            "transaction back.",
        ),
    )


# --- the agent itself ----------------------------------------------------------------------

def _agent_gauge(name: str, metric: str, for_: str, summary: str, description: str) -> Alert:
    """A warning while one of the agent's per-target gauges is above zero."""
    return Alert(name, _AGENT, "warning", f"max by (<T>) (@{metric}@) > 0", for_,
                 summary, description)


def _recent_errors() -> str:
    return _list("sum by (error) (increase(@errors@{target=%q}[10m])) > 0",
                 ("$labels.target",), "{{ $s.Labels.error }}", "error", " none counted")


def _agent_alerts() -> tuple[Alert, ...]:
    down = "max by (<T>) (@up@) == 0"
    return (
        Alert(
            "PgconnAgentTargetDown", _AGENT, "critical", _unless(down, "<T>", _STALLED),
            "agent_down_for_seconds",
            "pgconn-agent cannot poll PostgreSQL target {{ $labels.target }}",
            "pgconn-agent's polls of {{ $labels.target }} fail (recent errors:"
            + _recent_errors() + "), so its connection pressure is not visible. "
            "too_many_connections means the server is full: that is the incident itself.",
        ),
        Alert(
            "PgconnAgentPollsStalled", _AGENT, "critical", _STALLED,
            "polls_stalled_for_seconds",
            "pgconn-agent: polls of {{ $labels.target }} stall",
            "pgconn-agent's polls of {{ $labels.target }} do not finish: they time out on the "
            "client side or are still running when the next one is due (recent errors:"
            + _recent_errors() + "). The server accepts the connection but does not answer: "
            "a hung or overloaded server, a stopped backend, or a network path that drops "
            "packets. Its connection pressure is not visible meanwhile.",
        ),
        Alert(
            "PgconnAgentPollsFailing", _AGENT, "warning",
            _unless("sum by (<T>, error) (increase(@errors@[10m]))\n"
                    ">= [[poll_errors_per_10m]]", "<T>", down),
            "poll_errors_for_seconds",
            "pgconn-agent: polls of {{ $labels.target }} fail with {{ $labels.error }}",
            "{{ $value | humanize }} polls of {{ $labels.target }} failed with "
            "{{ $labels.error }} in the last 10 minutes while others succeed; the metrics of "
            "{{ $labels.target }} have gaps.",
        ),
        _agent_gauge(
            "PgconnAgentGroupsFolded", "folded", "groups_folded_for_seconds",
            "pgconn-agent: {{ $value | humanize }} groups of {{ $labels.target }} are folded "
            "by the cardinality cap",
            "{{ $value | humanize }} holder groups of {{ $labels.target }} exceed the agent's "
            "cardinality cap and are reported as one overflow group, so their application, "
            "host and user are not visible. Raise the cap or drop a dimension (often "
            "client_addr) in the agent's configuration."),
        _agent_gauge(
            "PgconnAgentSessionsHidden", "hidden", "sessions_hidden_for_seconds",
            "pgconn-agent cannot see {{ $value | humanize }} sessions of {{ $labels.target }}",
            "The agent's role on {{ $labels.target }} cannot see the state, client address "
            "or query of {{ $value | humanize }} client sessions, so they are counted as "
            "(hidden) and cannot be attributed. Grant the role pg_monitor."),
        Alert(
            "PgconnAgentAbsent", _AGENT, "critical",
            # Per scraped agent: absent() alone stays silent while any other agent reports.
            "(\n  group by (<J>) (present_over_time(@up@[1h]))\n"
            "  unless\n  group by (<J>) (@up@)\n)\nor\nabsent(@up@)",
            "agent_absent_for_seconds",
            "pgconn-agent metrics are absent{{ with $labels.instance }} from {{ . }}{{ end }}",
            "{{ with $labels.instance }}The agent at {{ . }} (job {{ $labels.job }}) reported "
            "within the last hour and no longer does{{ else }}No pgconn-agent reports "
            + c.AGENT_UP.prometheus_name + "{{ end }}: the agent is not running, or "
            "Prometheus does not scrape it. Connection pressure on the PostgreSQL servers it "
            "watches goes unnoticed.",
        ),
    )


# --- PgBouncer targets -----------------------------------------------------------------------

_POOL = "target=%q,database=%q,user=%q"
_POOL_ARGS = ("$labels.target", "$labels.database", "$labels.user")


def _pooler_alerts() -> tuple[Alert, ...]:
    """PgBouncer targets: clients queueing for a pool at its size, and the client limit.
    A pool's labels: the target's, database, user."""
    return (
        Alert(
            "PgBouncerClientsWaiting", _POOLER, "warning",
            "max by (<T>, database, user) (@pgb_wait@) > [[pgbouncer_wait_seconds]]\n"
            "and on (<T>, database, user)\n"
            "sum by (<T>, database, user) (@pgb_clients@{state=\"waiting\"}) > 0",
            "pgbouncer_wait_for_seconds",
            "PgBouncer {{ $labels.target }}: clients of pool {{ $labels.database }}/"
            "{{ $labels.user }} wait {{ $value | humanizeDuration }} for a server connection",
            _scalar(f"sum(@pgb_clients@{{{_POOL},state='waiting'}})", *_POOL_ARGS)
            + " clients of pool {{ $labels.database }}/{{ $labels.user }} on PgBouncer "
            "{{ $labels.target }} are waiting for a server connection, the longest for "
            "{{ $value | humanizeDuration }}; the pool has "
            + _scalar(f"sum(@pgb_servers@{{{_POOL},state='active'}})", *_POOL_ARGS)
            + " active server connections of its size "
            + _scalar(f"max(@pgb_size@{{{_POOL}}})", *_POOL_ARGS, default="?")
            + ". Waiting:"
            + _list(f"topk(3, sum by (application_name) (@pgb_client_count@{{{_POOL},"
                    f"state='waiting'}}))", _POOL_ARGS,
                    "application_name {{ $s.Labels.application_name }} "
                    "({{ $s.Value | humanize }})", "application_name")
            + ". The pool is at its size: find what keeps its server connections busy (long "
            "or idle transactions, session pool mode) before raising pool_size.",
        ),
        Alert(
            "PgBouncerClientLimitNear", _POOLER, "warning",
            "sum by (<T>) (@pgb_client_count@)\n"
            "/ on (<T>) max by (<T>) (@pgb_client_max@)\n"
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


ALERTS: tuple[Alert, ...] = (*_connection_alerts(), *_transaction_alerts(), *_agent_alerts(),
                             *_pooler_alerts())
ALERT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(a.name for a in ALERTS))


# --- dialects: how tokens become text in the plain file and in the Helm template ---------------

_TOKEN = re.compile(r"<T>|<J>|<GF>|<GA>")
_METRIC_REF = re.compile(r"@(\w+)@(?:\{([^}]*)\})?")
_THRESHOLD_REF = re.compile(r"\[\[(\w+)\]\]")


@dataclass(frozen=True, slots=True)
class _Dialect:
    """Token expansions; ``literal`` makes annotation text survive the output's templating."""

    tokens: Mapping[str, str]
    threshold: Callable[[str], str]
    for_: Callable[[str], str]
    selector: Callable[[str], str]  # the matchers of a metric reference, selector joined
    runbook_base: str
    literal: Callable[[str], str] = field(default=lambda s: s)

    def expr(self, text: str) -> str:
        text = _METRIC_REF.sub(lambda m: _METRICS[m.group(1)] + self.selector(m.group(2) or ""),
                               text)
        text = _THRESHOLD_REF.sub(lambda m: self.threshold(m.group(1)), text)
        return _TOKEN.sub(lambda m: self.tokens[m.group(0)], text)

    def annotation(self, text: str) -> str:
        text = _METRIC_REF.sub(lambda m: _METRICS[m.group(1)] + (
            "{" + m.group(2) + "}" if m.group(2) is not None else ""), text)
        parts = _TOKEN.split(text)
        tokens = _TOKEN.findall(text)
        out = self.literal(parts[0])
        for token, part in zip(tokens, parts[1:], strict=True):
            out += self.tokens[token] + self.literal(part)
        return out


def _plain(values: Mapping[str, float], settings: Settings) -> _Dialect:
    g = settings.group_by
    job = tuple(dict.fromkeys((*g, "job", "instance")))

    def selector(matchers: str) -> str:
        joined = ",".join(m for m in (matchers, settings.selector.strip()) if m)
        return "{" + joined + "}" if joined else ""

    return _Dialect(
        tokens={"<T>": ", ".join((*g, "target")), "<J>": ", ".join(job),
                "<GF>": "".join(f",{label}=%q" for label in g),
                "<GA>": "".join(f" $labels.{label}" for label in g)},
        threshold=lambda n: _number(values[n]), for_=lambda n: duration(values[n]),
        selector=selector, runbook_base=settings.runbook_base)


def _helm(path: str) -> _Dialect:
    g = f"{path}.groupBy"

    def selector(matchers: str) -> str:
        if matchers:
            return "{" + matchers + "{{ with " + path + ".selector }},{{ . }}{{ end }}}"
        return "{{ with " + path + '.selector }}{{ printf "{%s}" . }}{{ end }}'

    return _Dialect(
        tokens={"<T>": "{{ range " + g + " }}{{ . }}, {{ end }}target",
                "<J>": "{{ range " + g + ' }}{{ if not (has . (list "job" "instance")) }}'
                       "{{ . }}, {{ end }}{{ end }}job, instance",
                "<GF>": "{{ range " + g + " }},{{ . }}=%q{{ end }}",
                "<GA>": "{{ range " + g + " }} $labels.{{ . }}{{ end }}"},
        threshold=lambda n: "{{ " + path + ".thresholds." + n + " }}",
        for_=lambda n: "{{ " + path + ".thresholds." + n + " }}s",
        selector=selector, runbook_base="{{ " + path + ".runbookBase }}",
        literal=_helm_escape)


def _helm_escape(text: str) -> str:
    """Prometheus template text made literal for Helm: ``{{`` ... ``}}`` raw-string actions."""
    if "{{" not in text and "}}" not in text:
        return text
    if "`" in text:
        raise ValueError("annotation text must not contain backticks")
    return "{{`" + text + "`}}"


def _groups(d: _Dialect) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in ALERTS:
        groups.setdefault(a.group, []).append({
            "alert": a.name,
            "expr": _Code(d.expr(a.expr)),
            "for": d.for_(a.for_),
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": _Prose(d.annotation(a.summary)),
                "description": _Prose(d.annotation(a.description)),
                "runbook_url": f"{d.runbook_base}#{a.name.lower()}",
            },
        })
    return [{"name": name, "rules": rules} for name, rules in groups.items()]


# --- thresholds and settings from the user ------------------------------------------------------

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


def _check(t: Threshold, value: float) -> None:
    if t.unit == "ratio" and not 0 < value <= 1:
        raise ConfigError(f"alert threshold {t.name}: expected a ratio in (0, 1], "
                          f"found {_number(value)}")
    if t.is_duration and value < 0:
        raise ConfigError(f"alert threshold {t.name}: expected a duration >= 0 seconds, "
                          f"found {_number(value)}")
    if not t.is_duration and value <= 0:
        raise ConfigError(f"alert threshold {t.name}: expected a number > 0, "
                          f"found {_number(value)}")


def validate_overrides(overrides: Mapping[str, float]) -> dict[str, float]:
    """The effective thresholds; unknown names and senseless values are one-line errors."""
    out = dict(DEFAULTS)
    by_name = {t.name: t for t in THRESHOLDS}
    for name, value in overrides.items():
        if name not in DEFAULTS:
            raise ConfigError(f"unknown alert threshold {name!r}; known: {', '.join(DEFAULTS)}, "
                              f"and the settings {', '.join(SETTING_NAMES)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"alert threshold {name}: expected a number, found {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"alert threshold {name}: expected a finite number, "
                              f"found {value!r}")
        _check(by_name[name], value)
        out[name] = float(value)
    for low, high in ORDERED_PAIRS:
        if out[low] >= out[high]:
            name = low if low in overrides else high
            raise ConfigError(f"alert threshold {name}: {low} ({_number(out[low])}) must be "
                              f"below {high} ({_number(out[high])})")
    return out


def parse_sets(items: Iterable[str]) -> tuple[dict[str, float], Settings]:
    """The CLI's ``--set NAME=VALUE`` list: threshold overrides and the settings.

    ``selector=job="pgconn-agent"``, ``group_by=cluster,job``, ``runbook_base=https://...``;
    every other name is a threshold and takes a number.
    """
    overrides: dict[str, float] = {}
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE")
        if name == "group_by":
            settings[name] = tuple(x.strip() for x in raw.split(",") if x.strip())
        elif name in SETTING_NAMES:
            settings[name] = raw.strip()
        else:
            try:
                overrides[name] = float(raw)
            except ValueError:
                raise ConfigError(f"--set {item}: expected a number, "
                                  f"found {raw.strip()!r}") from None
    validate_overrides(overrides)
    return overrides, Settings(**settings)


def rule_groups(overrides: Mapping[str, float] | None = None,
                settings: Settings = Settings()) -> list[dict[str, Any]]:
    """The rule groups as data (the ``groups:`` list of a Prometheus rule file)."""
    return _groups(_plain(validate_overrides(overrides or {}), settings))


# --- YAML --------------------------------------------------------------------------------------

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


def _dump(data: Any, width: int = _WIDTH) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=width, allow_unicode=True,
                     default_flow_style=False)


def render_rules(overrides: Mapping[str, float] | None = None,
                 settings: Settings = Settings()) -> str:
    """The Prometheus rule file (YAML text), thresholds from ``DEFAULTS`` updated by ``overrides``.

    ``overrides`` maps names of ``THRESHOLDS`` to numbers (``*_for_seconds`` in seconds);
    unknown names raise ``ConfigError``. ``render_rules({})`` is the committed rule file.
    """
    values = validate_overrides(overrides or {})
    changed = [f"{k}={_number(v)}" for k, v in values.items() if v != DEFAULTS[k]]
    changed += [f"{k}={getattr(settings, k)!r}" for k in SETTING_NAMES
                if getattr(settings, k) != getattr(Settings(), k)]
    head = ["# Generated by agent/alert_rules.py; do not edit by hand.",
            "# Change thresholds with: pgconn-agent rules --set NAME=VALUE ... > FILE"]
    if changed:
        head.append("# Overridden: " + ", ".join(changed))
    return "\n".join(head) + "\n" + _dump({"groups": _groups(_plain(values, settings))})


def render_rules_helm(*, values_path: str = HELM_VALUES_PATH, indent: int = 0) -> str:
    """The rules as a Helm template: the ``groups:`` document of the rule file.

    Contract for the chart (``values_path`` defaults to ``.Values.alerts``):

    - Every threshold ``X`` of ``THRESHOLDS`` is read as ``{{ <values_path>.thresholds.X }}``;
      ``helm_values()`` gives the defaults. ``*_for_seconds`` values must be whole seconds
      (rendered as ``for: '<value>s'``).
    - ``<values_path>.selector`` (string), ``.groupBy`` (list of label names) and
      ``.runbookBase`` (URL) are the ``Settings``; ``helm_settings()`` gives their defaults.
    - Prometheus' own ``{{ $labels.x }}`` templates are escaped as ``{{`...`}}`` so Helm
      outputs them verbatim.
    - The text starts with ``groups:`` at column ``indent``.

    ``helm template`` with the default values yields exactly ``render_rules({})``'s groups.
    """
    # Unfolded: a line break must not fall inside a Helm action.
    text = _dump({"groups": _groups(_helm(values_path))}, width=1 << 20)
    pad = " " * indent
    return "".join(pad + line if line.strip() else line
                   for line in text.splitlines(keepends=True))


def helm_values() -> dict[str, float | int]:
    """Defaults for ``.Values.alerts.thresholds`` (whole numbers as ints)."""
    return {t.name: int(t.default) if t.default == int(t.default) else t.default
            for t in THRESHOLDS}


def helm_settings() -> dict[str, Any]:
    """Defaults for ``.Values.alerts`` besides the thresholds (the ``Settings``)."""
    d = Settings()
    return {"selector": d.selector, "groupBy": list(d.group_by), "runbookBase": d.runbook_base}


def thresholds_markdown() -> str:
    """The thresholds as a Markdown table (kept in ``alerts/README.md``)."""
    rows = ["| name | default | unit | meaning |", "|---|---|---|---|"]
    for t in THRESHOLDS:
        default = _number(t.default)
        if t.is_duration:
            default += f" ({duration(t.default)})"
        rows.append(f"| `{t.name}` | {default} | {t.unit} | {t.description} |")
    return "\n".join(rows) + "\n"
