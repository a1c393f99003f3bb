"""Builds the Grafana dashboards from the metric contract (``python -m dashboards.build``).

Every metric name comes from :mod:`agent.contract`; the committed JSON files are this module's
output, and ``tests/test_dashboards.py`` fails when they differ. ``--check`` reports stale files
without writing them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import gauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    TableSortByFieldState,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as gc
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from agent import contract as c
from agent.config import Thresholds

HERE = Path(__file__).resolve().parent
OVERVIEW_UID = "pgconn-connections-overview"
DRILLDOWN_UID = "pgconn-application-drilldown"
TAG = "pgconn-agent"

# Thresholds drawn on panels: the agent's default finding thresholds where it has one.
_DEFAULTS = Thresholds()
UTILIZATION_WARNING = _DEFAULTS.utilization_warning
UTILIZATION_CRITICAL = _DEFAULTS.utilization_critical
IDLE_IN_TX_WARNING_S = _DEFAULTS.idle_in_transaction_warning
IDLE_IN_TX_CRITICAL_S = _DEFAULTS.idle_in_transaction_critical
XACT_AGE_WARNING_S = _DEFAULTS.long_transaction
XACT_AGE_CRITICAL_S = 1800.0
LOCK_WAIT_WARNING_S = 10.0
LOCK_WAIT_CRITICAL_S = 60.0

DATASOURCE = gm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TARGET = 'target=~"$target"'
IDLE = 'state="idle"'
IDLE_IN_TX = 'state=~"idle in transaction.*"'

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# ---------------------------------------------------------------------------------------------
# PromQL from the contract


def sel(spec: c.MetricSpec, *matchers: str, suffix: str = "") -> str:
    """A selector of a contract metric, always scoped to ``$target``.

    ``suffix`` is only for a histogram's ``_bucket``/``_sum``/``_count`` series.
    """
    histogram = spec.instrument is c.Instrument.HISTOGRAM
    if suffix and (not histogram or suffix not in HISTOGRAM_SUFFIXES):
        raise ValueError(f"suffix {suffix!r} on {spec.name} ({spec.instrument.value})")
    return f"{spec.prometheus_name}{suffix}{{{', '.join((TARGET, *matchers))}}}"


def usable(by: str = "target") -> str:
    """Usable slots: max_connections minus the reserved slots, per target."""
    return (f"(max by ({by}) ({sel(c.CONNECTION_MAX)})"
            f" - max by ({by}) ({sel(c.CONNECTION_RESERVED)}))")


def zero_per_target(extra_labels: Sequence[tuple[str, str]] = ()) -> str:
    """0 for every target the agent reports, to complete a counter that has no series yet.

    Used only with ``or on (target)``: the real series win wherever they exist.
    """
    expr = f"0 * max by (target) ({sel(c.AGENT_UP)})"
    for label, value in extra_labels:
        expr = f'label_replace({expr}, "{label}", "{value}", "", "")'
    return expr


# ---------------------------------------------------------------------------------------------
# Panel helpers


def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
          table_format: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def steps(*pairs: tuple[float | None, str]) -> gd.ThresholdsConfig:
    return (gd.ThresholdsConfig().mode(gm.ThresholdsMode.ABSOLUTE)
            .steps([gm.Threshold(value=v, color=color) for v, color in pairs]))


def green_orange_red(warning: float, critical: float) -> gd.ThresholdsConfig:
    return steps((None, "green"), (warning, "orange"), (critical, "red"))


NEUTRAL = steps((None, "green"))


def series(title: str, description: str, *targets: prometheus.Dataquery, unit: str,
           w: int = 12, h: int = 8, stacked: bool = False,
           thresholds: gd.ThresholdsConfig | None = None) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
         .unit(unit).min(0).span(w).height(h).fill_opacity(10).line_width(1)
         .legend(VizLegendOptions().display_mode(gc.LegendDisplayMode.TABLE)
                 .placement(gc.LegendPlacement.BOTTOM).show_legend(True)
                 .calcs(["lastNotNull", "max"]).sort_by("Last *").sort_desc(True))
         .thresholds(thresholds or NEUTRAL))
    if thresholds is not None:
        dashed = GraphThresholdsStyleConfig().mode(gc.GraphThresholdsStyleMode.DASHED)
        p = p.thresholds_style(dashed)
    if stacked:
        p = p.stacking(StackingConfig().mode(gc.StackingMode.NORMAL).group("A")).fill_opacity(40)
    for t in targets:
        p = p.with_target(t)
    return p


def single_stat(title: str, description: str, *targets: prometheus.Dataquery, unit: str,
                thresholds: gd.ThresholdsConfig, w: int = 4, h: int = 6) -> stat.Panel:
    p = (stat.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
         .span(w).height(h).thresholds(thresholds)
         .color_mode(gc.BigValueColorMode.VALUE).graph_mode(gc.BigValueGraphMode.AREA)
         .text_mode(gc.BigValueTextMode.VALUE_AND_NAME)
         .reduce_options(_reduce_last()))
    for t in targets:
        p = p.with_target(t)
    return p


def _reduce_last() -> ReduceDataOptions:
    return ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def unit_override(unit: str) -> list[gm.DynamicConfigValue]:
    return [gm.DynamicConfigValue(id_val="unit", value=unit)]


def holders_table(title: str, description: str, by: Sequence[str], *matchers: str,
                  w: int = 24, h: int = 10) -> table.Panel:
    """One row per holder group: connections, oldest state age, oldest transaction age."""
    labels = ", ".join(by)
    count = query(f"sum by ({labels}) ({sel(c.CONNECTION_COUNT, *matchers)})",
                  ref="A", instant=True, table_format=True)
    state_age = query(f"max by ({labels}) ({sel(c.STATE_AGE_MAX, *matchers)})",
                      ref="B", instant=True, table_format=True)
    xact_age = query(f"max by ({labels}) ({sel(c.TRANSACTION_AGE_MAX, *matchers)})",
                     ref="C", instant=True, table_format=True)
    return (table.Panel().title(title).description(description).datasource(DATASOURCE)
            .span(w).height(h).unit("none").thresholds(NEUTRAL)
            .with_target(count).with_target(state_age).with_target(xact_age)
            .with_transformation(gm.DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(gm.DataTransformerConfig(id_val="organize", options={
                "excludeByName": {"Time": True},
                "indexByName": {**{label: i for i, label in enumerate(by)},
                                "Value #A": len(by), "Value #B": len(by) + 1,
                                "Value #C": len(by) + 2},
                "renameByName": {"Value #A": "Connections", "Value #B": "Oldest in state",
                                 "Value #C": "Oldest transaction",
                                 "application_name": "Application", "client_addr": "Client host",
                                 "usename": "User", "datname": "Database", "state": "State",
                                 "target": "Target"},
            }))
            .sort_by([_sort("Connections")])
            .override_by_name("Oldest in state", unit_override("s"))
            .override_by_name("Oldest transaction", unit_override("s")))


def _sort(name: str) -> TableSortByFieldState:
    return TableSortByFieldState().display_name(name).desc(True)


# ---------------------------------------------------------------------------------------------
# Variables


def datasource_variable() -> gd.DatasourceVariable:
    return (gd.DatasourceVariable("datasource").label("Data source").type("prometheus")
            .description("Prometheus (or Mimir/Thanos) that stores the agent's metrics."))


def target_variable() -> gd.QueryVariable:
    return (gd.QueryVariable("target").label("Target")
            .description("Target name as configured in pgconn-agent (the 'target' label).")
            .datasource(DATASOURCE)
            .query(f"label_values({c.AGENT_UP.prometheus_name}, target)")
            .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(gm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def application_variable(*, multi: bool) -> gd.QueryVariable:
    v = (gd.QueryVariable("application_name").label("Application")
         .description("application_name of the client sessions; '(unset)' when the client "
                      "sends none.")
         .datasource(DATASOURCE)
         .query(f"label_values({sel(c.CONNECTION_COUNT)}, application_name)")
         .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED)
         .sort(gm.VariableSort.ALPHABETICAL_ASC))
    if multi:
        v = v.multi(True).include_all(True).all_value(".*")
    return v


def base(title: str, uid: str, description: str) -> gd.Dashboard:
    return (gd.Dashboard(title).uid(uid).description(description).tags([TAG, "postgresql"])
            .editable().tooltip(gm.DashboardCursorSync.CROSSHAIR)
            .time("now-1h", "now").refresh("30s").timezone("browser")
            .link(gd.DashboardLink("pgconn-agent dashboards").type(gm.DashboardLinkType.DASHBOARDS)
                  .tags([TAG]).as_dropdown(False).include_vars(True).keep_time(True))
            .with_variable(datasource_variable())
            .with_variable(target_variable()))


# ---------------------------------------------------------------------------------------------
# Connections overview


def connections_overview() -> gd.Dashboard:
    app = 'application_name=~"$application_name"'
    count = c.CONNECTION_COUNT
    d = (base("PostgreSQL connections (pgconn-agent)", OVERVIEW_UID,
              "Who holds the connection slots of each PostgreSQL target: by state, application, "
              "client host and holder group, with idle-in-transaction sessions, lock chains, "
              "churn, session outcomes, limits and the agent's own health.")
         .with_variable(application_variable(multi=True)))

    d = d.with_row(gd.Row("Capacity"))
    d = d.with_panel(
        gauge.Panel().title("Usable slots in use").datasource(DATASOURCE)
        .description("Client backends divided by usable slots (max_connections minus the "
                     "superuser/reserved slots). Orange from 80 %, red from 95 %: at 100 % "
                     "clients get 'remaining connection slots are reserved' or 'too many "
                     "clients'.")
        .unit("percentunit").min(0).max(1).decimals(1).span(5).height(7)
        .thresholds(green_orange_red(UTILIZATION_WARNING, UTILIZATION_CRITICAL))
        .show_threshold_markers(True).reduce_options(_reduce_last())
        .with_target(query(f"max by (target) ({sel(c.CONNECTION_UTILIZATION)})", "{{target}}")))
    d = d.with_panel(single_stat(
        "Used / usable slots",
        "Client backends now, and the slots clients may use (max_connections minus reserved). "
        "Raising max_connections rarely fixes a full server: find the holder below first.",
        query(f"sum by (target) ({sel(count)})", "used {{target}}", ref="A"),
        query(usable(), "usable {{target}}", ref="B"),
        unit="none", thresholds=NEUTRAL, w=5, h=7))
    d = d.with_panel(single_stat(
        "Free usable slots",
        "Usable slots minus client backends. Red under 3, orange under 10.",
        query(f"{usable()} - sum by (target) ({sel(count)})", "{{target}}"),
        unit="none", thresholds=steps((None, "red"), (3, "orange"), (10, "green")), w=4, h=7))
    d = d.with_panel(series(
        "All backends by type",
        "Every backend of the server by backend_type (client backends, autovacuum workers, "
        "WAL senders, parallel workers...). Background processes use slots too.",
        query(f"sum by (target, backend_type) ({sel(c.BACKEND_COUNT)})",
              "{{target}} {{backend_type}}"),
        unit="none", w=10, h=7, stacked=True))

    d = d.with_row(gd.Row("Who holds the connections"))
    d = d.with_panel(series(
        "Client backends by state",
        "Client backends by state, stacked, with the usable limit as a dashed line. A wall of "
        "'idle' near the limit means client pools hold slots they do not use.",
        query(f"sum by (target, state) ({sel(count)})", "{{target}} {{state}}", ref="A"),
        query(usable(), "{{target}} usable limit", ref="B"),
        unit="none", w=12, h=9, stacked=True)
        .override_by_regexp(".* usable limit$", _limit_line()))
    d = d.with_panel(series(
        "Client backends by application",
        "Client backends per application_name (filtered by the Application variable). "
        "'(unset)' means the client sends no application_name: look at the host panel.",
        query(f"sum by (target, application_name) ({sel(count, app)})",
              "{{target}} {{application_name}}"),
        unit="none", w=12, h=9, stacked=True))
    d = d.with_panel(series(
        "Client backends by client host",
        "Client backends per client address ('local' for unix sockets). Several hosts with the "
        "same count usually mean one pool per instance multiplied by replicas.",
        query(f"sum by (target, client_addr) ({sel(count, app)})", "{{target}} {{client_addr}}"),
        unit="none", w=12, h=9, stacked=True))
    d = d.with_panel(series(
        "Idle client backends by application and host",
        "Idle sessions per application and host: connections a pool keeps open without using "
        "them. A holder with many idle sessions for minutes is hoarding slots.",
        query(f'sum by (target, application_name, client_addr) ({sel(count, app, IDLE)})',
              "{{target}} {{application_name}} @ {{client_addr}}"),
        unit="none", w=12, h=9, stacked=True))
    d = d.with_panel(holders_table(
        "Top holders",
        "One row per holder group (target, application, host, user, database, state), largest "
        "first, with the oldest time in that state and the oldest open transaction. Groups the "
        "agent's cardinality cap folded appear as '(other: folded by cardinality cap)'.",
        ("target", "application_name", "client_addr", "usename", "datname", "state"), app,
        w=24, h=11))

    d = d.with_row(gd.Row("Idle in transaction and locks"))
    d = d.with_panel(series(
        "Idle in transaction by application",
        "Sessions inside an open transaction doing nothing: they hold their slot and their "
        "locks until the client commits, rolls back or disconnects.",
        query(f"sum by (target, application_name) ({sel(count, app, IDLE_IN_TX)})",
              "{{target}} {{application_name}}"),
        unit="none", w=12, h=8, stacked=True))
    d = d.with_panel(series(
        "Oldest idle in transaction by application",
        "Longest time a session of the application has been idle in transaction (now - "
        "state_change). Orange from 1 minute, red from 5 minutes.",
        query(f"max by (target, application_name) ({sel(c.STATE_AGE_MAX, app, IDLE_IN_TX)})",
              "{{target}} {{application_name}}"),
        unit="s", w=12, h=8,
        thresholds=green_orange_red(IDLE_IN_TX_WARNING_S, IDLE_IN_TX_CRITICAL_S)))
    d = d.with_panel(series(
        "Oldest open transaction by application",
        "Longest-running transaction per application (now - xact_start), any state. Long "
        "transactions hold locks and hold back vacuum. Orange from 5 minutes, red from 30.",
        query(f"max by (target, application_name) ({sel(c.TRANSACTION_AGE_MAX, app)})",
              "{{target}} {{application_name}}"),
        unit="s", w=12, h=8,
        thresholds=green_orange_red(XACT_AGE_WARNING_S, XACT_AGE_CRITICAL_S)))
    d = d.with_panel(series(
        "Waiting sessions by wait event type",
        "Active sessions that are waiting, by wait_event_type (Lock, LWLock, IO, Client...).",
        query(f"sum by (target, wait_event_type) ({sel(c.CONNECTION_WAITING, app)})",
              "{{target}} {{wait_event_type}}"),
        unit="none", w=12, h=8, stacked=True))
    d = d.with_panel(series(
        "Lock waiters by application",
        "Sessions waiting for a heavyweight lock, by the waiting application and lock mode.",
        query(f"sum by (target, application_name, mode) ({sel(c.LOCK_WAITING, app)})",
              "{{target}} {{application_name}} {{mode}}"),
        unit="none", w=8, h=8, stacked=True))
    d = d.with_panel(series(
        "Blockers by application",
        "Sessions blocked directly (pg_blocking_pids) by each holder group's sessions, by the "
        "blocking application and its state. A blocker 'idle in transaction' is a client that "
        "left a transaction open: the whole queue stays stuck until it ends. Queued waiters "
        "block the ones behind them too (state 'active'); the root is the one that is not "
        "waiting.",
        query(f"sum by (target, application_name, client_addr, state) "
              f"({sel(c.LOCK_BLOCKING, app)})",
              "{{target}} {{application_name}} @ {{client_addr}} ({{state}}) blocks"),
        unit="none", w=8, h=8, stacked=True))
    d = d.with_panel(series(
        "Longest lock wait by application",
        "Longest current heavyweight-lock wait per waiting application. Orange from 10 s, red "
        "from 60 s.",
        query(f"max by (target, application_name) ({sel(c.LOCK_WAIT_TIME_MAX, app)})",
              "{{target}} {{application_name}}"),
        unit="s", w=8, h=8,
        thresholds=green_orange_red(LOCK_WAIT_WARNING_S, LOCK_WAIT_CRITICAL_S)))

    d = d.with_row(gd.Row("Churn and session outcomes"))
    d = d.with_panel(series(
        "New connections per second by application and host",
        "Client backends opened per second (new backends seen by the agent's polls). A steady "
        "high rate means a client connects per request or a pool that keeps recycling.",
        query(f"sum by (target, application_name, client_addr) "
              f"(rate({sel(c.CONNECTION_OPENED, app)}[$__rate_interval]))",
              "{{target}} {{application_name}} @ {{client_addr}}"),
        unit="cps", w=12, h=8))
    d = d.with_panel(series(
        "Session outcomes per second",
        "pg_stat_database session counters per second by outcome: all sessions, abandoned "
        "(client vanished), fatal (ended by an error) and killed (terminated by an operator or "
        "a timeout such as idle_in_transaction_session_timeout). PostgreSQL 14+.",
        query(f"sum by (target, outcome) (rate({sel(c.SESSIONS)}[$__rate_interval]))",
              "{{target}} {{outcome}}"),
        unit="cps", w=12, h=8))
    d = d.with_panel(series(
        "Short-lived sessions per second by holder (churn)",
        "Sessions that opened and closed again, per second over the last minute: the "
        "database's pg_stat_database.sessions rate shared among the holders whose short-lived "
        "backends the polls caught (PostgreSQL 14+). No series: not attributable.",
        query(f"sum by (target, datname, application_name, client_addr) "
              f"({sel(c.CONNECTION_OPEN_RATE, app)})",
              "{{target}} {{datname}} {{application_name}} @ {{client_addr}}"),
        unit="cps", w=24, h=8))

    d = d.with_row(gd.Row("Settings and limits"))
    d = d.with_panel(
        stat.Panel().title("Connection settings").datasource(DATASOURCE)
        .description("Connection-relevant server settings (session defaults). Durations in "
                     "seconds; 0 means disabled.")
        .unit("none").span(16).height(8).thresholds(NEUTRAL)
        .color_mode(gc.BigValueColorMode.NONE).graph_mode(gc.BigValueGraphMode.NONE)
        .text_mode(gc.BigValueTextMode.VALUE_AND_NAME).reduce_options(_reduce_last())
        .with_target(query(f"max by (target, name) ({sel(c.SETTING)})", "{{name}} ({{target}})",
                           instant=True))
        .override_by_regexp(".*(timeout|_idle|_interval) .*", [
            *unit_override("s"),
            gm.DynamicConfigValue(id_val="mappings", value=[
                {"type": "value", "options": {"0": {"text": "disabled", "index": 0}}}]),
        ]))
    d = d.with_panel(
        table.Panel().title("Role and database connection limits").datasource(DATASOURCE)
        .description("Connection limits set on roles (rolconnlimit) or databases "
                     "(datconnlimit), with the client backends of that role or database now. "
                     "A limit reached gives 'too many connections for role/database'. Usage "
                     "is summed over the agent's groups, so it needs usename/datname among the "
                     "configured group dimensions.")
        .span(8).height(8).unit("none").thresholds(NEUTRAL)
        .with_target(query(f"max by (target, scope, name) ({sel(c.CONNECTION_LIMIT)})",
                           ref="A", instant=True, table_format=True))
        .with_target(query(_limit_usage(), ref="B", instant=True, table_format=True))
        .with_transformation(gm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(gm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True},
            "renameByName": {"Value #A": "Limit", "Value #B": "In use", "target": "Target",
                             "scope": "Scope", "name": "Name"},
        })))

    d = d.with_row(gd.Row("Agent health"))
    d = d.with_panel(
        stat.Panel().title("Agent up").datasource(DATASOURCE)
        .description("1 when the agent's last poll of the target succeeded. Down means the "
                     "dashboard's other panels show no current data for that target.")
        .span(4).height(7).unit("none").thresholds(steps((None, "red"), (1, "green")))
        .color_mode(gc.BigValueColorMode.BACKGROUND).graph_mode(gc.BigValueGraphMode.NONE)
        .text_mode(gc.BigValueTextMode.VALUE_AND_NAME).reduce_options(_reduce_last())
        .mappings([gm.ValueMap(options={
            "0": gm.ValueMappingResult(text="down", color="red", index=0),
            "1": gm.ValueMappingResult(text="up", color="green", index=1)})])
        .with_target(query(f"max by (target) ({sel(c.AGENT_UP)})", "{{target}}")))
    bucket = sel(c.POLL_DURATION, suffix="_bucket")
    d = d.with_panel(series(
        "Poll duration",
        "Time one poll of the target takes (p50 and p95 from the histogram). Polls near the "
        "poll interval get skipped.",
        query(f"histogram_quantile(0.95, sum by (target, le) (rate({bucket}[$__rate_interval])))",
              "{{target}} p95", ref="A"),
        query(f"histogram_quantile(0.5, sum by (target, le) (rate({bucket}[$__rate_interval])))",
              "{{target}} p50", ref="B"),
        unit="s", w=7, h=7, thresholds=green_orange_red(1.0, 5.0)))
    d = d.with_panel(series(
        "Poll errors and skipped polls",
        "Failed polls by kind (connect, auth, timeout, too_many_connections, query) and polls "
        "skipped because the previous one still ran, per interval. 'none' is drawn at 0 for "
        "a target that never had one.",
        query(f"sum by (target, error) "
              f"(increase({sel(c.POLL_ERRORS)}[$__rate_interval]))"
              f" or on (target) {zero_per_target([('error', 'none')])}",
              "{{target}} error {{error}}", ref="A"),
        query(f"sum by (target) (increase({sel(c.POLL_SKIPPED)}[$__rate_interval]))"
              f" or on (target) {zero_per_target()}",
              "{{target}} skipped", ref="B"),
        unit="none", w=7, h=7, thresholds=steps((None, "green"), (1, "red"))))
    d = d.with_panel(series(
        "Folded groups and hidden sessions",
        "Groups folded into '(other: folded by cardinality cap)' (raise the cap or drop a "
        "dimension) and sessions whose details the agent's role cannot see (grant pg_monitor).",
        query(f"max by (target) ({sel(c.GROUPS_FOLDED)})", "{{target}} folded groups", ref="A"),
        query(f"max by (target) ({sel(c.SESSIONS_HIDDEN)})", "{{target}} hidden sessions",
              ref="B"),
        unit="none", w=6, h=7, thresholds=steps((None, "green"), (1, "orange"))))
    return d


def _limit_line() -> list[gm.DynamicConfigValue]:
    return [
        gm.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "A"}),
        gm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        gm.DynamicConfigValue(id_val="custom.lineWidth", value=2),
        gm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
        gm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
    ]


def _limit_usage() -> str:
    """Client backends of each role/database that has a limit, labelled like the limit."""
    parts = []
    for scope, label in (("role", "usename"), ("database", "datname")):
        relabelled = (f'label_replace(label_replace({sel(c.CONNECTION_COUNT)}, '
                      f'"scope", "{scope}", "", ""), "name", "$1", "{label}", "(.*)")')
        limit = sel(c.CONNECTION_LIMIT, f'scope="{scope}"')
        parts.append(f"(sum by (target, scope, name) ({relabelled})"
                     f" and on (target, scope, name) {limit})")
    return " or ".join(parts)


# ---------------------------------------------------------------------------------------------
# Application drill-down


def application_drilldown() -> gd.Dashboard:
    app = 'application_name="$application_name"'
    count = c.CONNECTION_COUNT
    d = (base("PostgreSQL application drill-down (pgconn-agent)", DRILLDOWN_UID,
              "One application's connections: hosts and states over time, idle and "
              "idle-in-transaction ages, what it blocks and what it waits for.")
         .with_variable(application_variable(multi=False)))

    d = d.with_row(gd.Row("Holdings"))
    d = d.with_panel(single_stat(
        "Connections held",
        "Client backends of this application now.",
        query(f"sum by (target) ({sel(count, app)})", "{{target}}"),
        unit="none", thresholds=NEUTRAL, w=6, h=6))
    d = d.with_panel(single_stat(
        "Share of usable slots",
        "This application's client backends divided by the target's usable slots. Orange from "
        "50 %, red from 80 %: one client holding most of the server.",
        query(f"sum by (target) ({sel(count, app)}) / on (target) {usable()}", "{{target}}"),
        unit="percentunit", thresholds=green_orange_red(0.5, 0.8), w=6, h=6))
    d = d.with_panel(single_stat(
        "Idle share",
        "Fraction of this application's connections that are idle: high means its pools keep "
        "more connections than they use (over-sized pool, or one pool per client instance).",
        query(f'(sum by (target) ({sel(count, app, IDLE)})'
              f" or on (target) 0 * sum by (target) ({sel(count, app)}))"
              f" / on (target) sum by (target) ({sel(count, app)})", "{{target}}"),
        unit="percentunit", thresholds=green_orange_red(0.5, 0.8), w=6, h=6))
    d = d.with_panel(single_stat(
        "Client hosts",
        "Distinct client hosts holding connections for this application.",
        query(f"count by (target) (sum by (target, client_addr) ({sel(count, app)}))",
              "{{target}}"),
        unit="none", thresholds=NEUTRAL, w=6, h=6))
    d = d.with_panel(series(
        "Connections by host and state",
        "This application's client backends per client host and state, stacked.",
        query(f"sum by (target, client_addr, state) ({sel(count, app)})",
              "{{target}} {{client_addr}} {{state}}"),
        unit="none", w=16, h=9, stacked=True))
    d = d.with_panel(series(
        "Connections by user and database",
        "This application's client backends per role and database.",
        query(f"sum by (target, usename, datname) ({sel(count, app)})",
              "{{target}} {{usename}}@{{datname}}"),
        unit="none", w=8, h=9, stacked=True))
    d = d.with_panel(holders_table(
        "Holder groups",
        "This application's groups (host, user, database, state) with the oldest time in state "
        "and the oldest open transaction.",
        ("target", "client_addr", "usename", "datname", "state"), app, w=24, h=9))

    d = d.with_row(gd.Row("Ages"))
    d = d.with_panel(series(
        "Oldest idle session by host",
        "Longest time one of this application's sessions has been idle, per host. Idle for "
        "minutes while the server is full is a pool holding slots it does not need.",
        query(f'max by (target, client_addr) ({sel(c.STATE_AGE_MAX, app, IDLE)})',
              "{{target}} {{client_addr}}"),
        unit="s", w=8, h=8))
    d = d.with_panel(series(
        "Oldest idle in transaction by host",
        "Longest time one of this application's sessions has been idle in transaction, per "
        "host. Orange from 1 minute, red from 5: a transaction left open across an await or a "
        "network call.",
        query(f"max by (target, client_addr) ({sel(c.STATE_AGE_MAX, app, IDLE_IN_TX)})",
              "{{target}} {{client_addr}}"),
        unit="s", w=8, h=8,
        thresholds=green_orange_red(IDLE_IN_TX_WARNING_S, IDLE_IN_TX_CRITICAL_S)))
    d = d.with_panel(series(
        "Oldest open transaction by host and state",
        "Longest-running transaction of this application (now - xact_start) per host and "
        "state. Orange from 5 minutes, red from 30.",
        query(f"max by (target, client_addr, state) ({sel(c.TRANSACTION_AGE_MAX, app)})",
              "{{target}} {{client_addr}} {{state}}"),
        unit="s", w=8, h=8,
        thresholds=green_orange_red(XACT_AGE_WARNING_S, XACT_AGE_CRITICAL_S)))

    d = d.with_row(gd.Row("Locks and waits"))
    d = d.with_panel(series(
        "Sessions this application blocks",
        "Sessions (of any application) blocked directly by this application's sessions, per "
        "blocking host and state. 'idle in transaction' here: the client left a transaction "
        "open while others wait for its locks. 'active' blockers are usually waiters that "
        "head a queue behind another blocker.",
        query(f"sum by (target, client_addr, state) ({sel(c.LOCK_BLOCKING, app)})",
              "{{target}} {{client_addr}} ({{state}})"),
        unit="none", w=12, h=8, stacked=True))
    d = d.with_panel(series(
        "This application's lock waits",
        "This application's sessions waiting for a heavyweight lock, by lock type and mode.",
        query(f"sum by (target, locktype, mode) ({sel(c.LOCK_WAITING, app)})",
              "{{target}} {{locktype}} {{mode}}"),
        unit="none", w=12, h=8, stacked=True))
    d = d.with_panel(series(
        "Blockers on the same targets (what may block it)",
        "Every blocking group on the targets, any application. The metrics do not pair a "
        "waiter with its blocker; while this application waits, these are the candidates. "
        "`pgconn-agent diagnose` shows the exact chain with pids.",
        query(f"sum by (target, application_name, client_addr, state) "
              f"({sel(c.LOCK_BLOCKING)})",
              "{{target}} {{application_name}} @ {{client_addr}} ({{state}})"),
        unit="none", w=8, h=8, stacked=True))
    d = d.with_panel(series(
        "Longest lock wait",
        "Longest current heavyweight-lock wait of this application's sessions, per database. "
        "Orange from 10 s, red from 60 s.",
        query(f"max by (target, datname) ({sel(c.LOCK_WAIT_TIME_MAX, app)})",
              "{{target}} {{datname}}"),
        unit="s", w=8, h=8,
        thresholds=green_orange_red(LOCK_WAIT_WARNING_S, LOCK_WAIT_CRITICAL_S)))
    d = d.with_panel(series(
        "Waiting sessions by wait event",
        "This application's active sessions that are waiting, by wait event type and event.",
        query(f"sum by (target, wait_event_type, wait_event) ({sel(c.CONNECTION_WAITING, app)})",
              "{{target}} {{wait_event_type}}/{{wait_event}}"),
        unit="none", w=8, h=8, stacked=True))

    d = d.with_row(gd.Row("Churn"))
    d = d.with_panel(series(
        "New connections per second by host",
        "Client backends this application opened per second, per host.",
        query(f"sum by (target, client_addr) "
              f"(rate({sel(c.CONNECTION_OPENED, app)}[$__rate_interval]))",
              "{{target}} {{client_addr}}"),
        unit="cps", w=24, h=8))
    return d


# ---------------------------------------------------------------------------------------------
# Output

DASHBOARDS = {
    "connections-overview.json": connections_overview,
    "application-drilldown.json": application_drilldown,
}


def _finish(model: gm.Dashboard) -> gm.Dashboard:
    """Stable panel ids, and no interval-variable fields on variables that are no interval.

    Panel ids are 1, 2, ... in layout order, rows' nested panels included. The SDK writes
    ``auto``/``auto_min``/``auto_count`` on every variable; Grafana's published VariableModel
    has no such fields, so the structural check rejects them.
    """
    for variable in (model.templating.list_val or []) if model.templating else []:
        if variable.type_val != gm.VariableType.INTERVAL:
            variable.auto = variable.auto_min = variable.auto_count = None
    next_id = 1
    for panel in model.panels or []:
        panel.id_val = next_id
        next_id += 1
        for nested in getattr(panel, "panels", None) or []:
            nested.id_val = next_id
            next_id += 1
    return model


def render(name: str) -> str:
    """The JSON text of one dashboard, exactly as committed."""
    model = _finish(DASHBOARDS[name]().build())
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def rendered() -> dict[str, dict[str, Any]]:
    """Every dashboard as parsed JSON, by file name."""
    return {name: json.loads(render(name)) for name in DASHBOARDS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed file differs, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path: Path = args.out / name
        text = render(name)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    if args.check and stale:
        print("stale (run python -m dashboards.build): " + ", ".join(map(str, stale)),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
