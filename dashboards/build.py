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
from dataclasses import dataclass
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
from agent.alert_rules import RUNBOOK_BASE
from agent.config import Thresholds

HERE = Path(__file__).resolve().parent
OVERVIEW_UID = "pgconn-connections-overview"
DRILLDOWN_UID = "pgconn-application-drilldown"
PGBOUNCER_UID = "pgconn-pgbouncer-pools"
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
SCOPE = ('job=~"$job"', 'cluster=~"$cluster"', 'target=~"$target"')
IDLE = 'state="idle"'
IDLE_IN_TX = 'state=~"idle in transaction.*"'

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# ---------------------------------------------------------------------------------------------
# PromQL from the contract


def sel(spec: c.MetricSpec, *matchers: str, suffix: str = "") -> str:
    """A selector of a contract metric, always scoped to ``$job``, ``$cluster``, ``$target``.

    ``suffix`` is only for a histogram's ``_bucket``/``_sum``/``_count`` series.
    """
    histogram = spec.instrument is c.Instrument.HISTOGRAM
    if suffix and (not histogram or suffix not in HISTOGRAM_SUFFIXES):
        raise ValueError(f"suffix {suffix!r} on {spec.name} ({spec.instrument.value})")
    return f"{spec.prometheus_name}{suffix}{{{', '.join((*SCOPE, *matchers))}}}"


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


_RENAME = {"application_name": "Application", "client_addr": "Client host", "usename": "User",
           "datname": "Database", "state": "State", "target": "Target", "pid": "PID",
           "scope": "Scope", "name": "Name"}


def _instant_table(title: str, description: str, columns: Sequence[str],
                   values: Sequence[tuple[str, str, str]], *, sort: str, w: int, h: int
                   ) -> table.Panel:
    """One row per label set: ``columns`` (labels) then one column per (ref, expr, name)."""
    p = (table.Panel().title(title).description(description).datasource(DATASOURCE)
         .span(w).height(h).unit("none").thresholds(NEUTRAL))
    for ref, expr, _ in values:
        p = p.with_target(query(expr, ref=ref, instant=True, table_format=True))
    index = {label: i for i, label in enumerate(columns)}
    index.update({f"Value #{ref}": len(columns) + i for i, (ref, _, _) in enumerate(values)})
    return (p.with_transformation(gm.DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(gm.DataTransformerConfig(id_val="organize", options={
                "excludeByName": {"Time": True},
                "indexByName": index,
                "renameByName": {**{f"Value #{ref}": name for ref, _, name in values},
                                 **{k: v for k, v in _RENAME.items() if k in columns}},
            }))
            .sort_by([_sort(sort)]))


def holders_table(title: str, description: str, by: Sequence[str], *matchers: str,
                  w: int = 24, h: int = 10) -> table.Panel:
    """One row per holder group: connections, oldest state age, oldest transaction age; the
    application links into its drill-down."""
    labels = ", ".join(by)
    return (_instant_table(title, description, by, [
        ("A", f"sum by ({labels}) ({sel(c.CONNECTION_COUNT, *matchers)})", "Connections"),
        ("B", f"max by ({labels}) ({sel(c.STATE_AGE_MAX, *matchers)})", "Oldest in state"),
        ("C", f"max by ({labels}) ({sel(c.TRANSACTION_AGE_MAX, *matchers)})",
         "Oldest transaction"),
    ], sort="Connections", w=w, h=h)
        .override_by_name("Oldest in state", unit_override("s"))
        .override_by_name("Oldest transaction", unit_override("s"))
        .override_by_name("Application", _drilldown_link("${__value.raw}",
                                                         "${__data.fields.Target}")))


def _sort(name: str) -> TableSortByFieldState:
    return TableSortByFieldState().display_name(name).desc(True)


# ---------------------------------------------------------------------------------------------
# Links: holders into the drill-down, panels to their runbook section


def drilldown_url(application: str, target: str) -> str:
    """The drill-down for one application on one target, keeping the other variables."""
    return (f"/d/{DRILLDOWN_UID}?var-application_name={application}&var-target={target}"
            "&${datasource:queryparam}&${job:queryparam}&${cluster:queryparam}"
            "&${__url_time_range}")


def _drilldown_link(application: str, target: str) -> list[gm.DynamicConfigValue]:
    return [gm.DynamicConfigValue(id_val="links", value=[{
        "title": "Drill down into this application",
        "url": drilldown_url(application, target)}])]


def holder_links() -> list[gd.DashboardLink]:
    """Data links of series labelled by application_name and target."""
    return [gd.DashboardLink("Drill down into ${__field.labels.application_name}")
            .url(drilldown_url("${__field.labels.application_name}",
                               "${__field.labels.target}"))]


def runbook(*alerts: str) -> list[gd.DashboardLink]:
    """Panel links to the runbook sections of the alerts a panel helps confirm."""
    return [gd.DashboardLink(f"Runbook: {name}").type(gm.DashboardLinkType.LINK)
            .url(f"{RUNBOOK_BASE}#{name.lower()}").target_blank(True) for name in alerts]


# ---------------------------------------------------------------------------------------------
# Measures: one metric aggregated one way, drawn per holder on both dashboards


@dataclass(frozen=True, slots=True)
class Measure:
    """What a per-holder time-series panel draws; the dashboards choose the ``by`` labels."""

    spec: c.MetricSpec
    agg: str
    unit: str
    matchers: tuple[str, ...] = ()
    thresholds: gd.ThresholdsConfig | None = None
    stacked: bool = True
    rate: bool = False

    def expr(self, by: Sequence[str], *matchers: str) -> str:
        selector = sel(self.spec, *self.matchers, *matchers)
        inner = f"rate({selector}[$__rate_interval])" if self.rate else selector
        return f"{self.agg} by ({', '.join(by)}) ({inner})"

    def panel(self, title: str, description: str, by: Sequence[str], *matchers: str,
              w: int = 12, h: int = 8, suffix: str = "") -> timeseries.Panel:
        legend = " ".join("{{" + label + "}}" for label in by) + suffix
        return series(title, description, query(self.expr(by, *matchers), legend),
                      unit=self.unit, w=w, h=h, stacked=self.stacked,
                      thresholds=self.thresholds)


IDLE_IN_TX_COUNT = Measure(c.CONNECTION_COUNT, "sum", "none", (IDLE_IN_TX,))
IDLE_AGE = Measure(c.STATE_AGE_MAX, "max", "s", (IDLE,), stacked=False)
IDLE_IN_TX_AGE = Measure(c.STATE_AGE_MAX, "max", "s", (IDLE_IN_TX,), stacked=False,
                         thresholds=green_orange_red(IDLE_IN_TX_WARNING_S, IDLE_IN_TX_CRITICAL_S))
XACT_AGE = Measure(c.TRANSACTION_AGE_MAX, "max", "s", stacked=False,
                   thresholds=green_orange_red(XACT_AGE_WARNING_S, XACT_AGE_CRITICAL_S))
WAITING = Measure(c.CONNECTION_WAITING, "sum", "none")
LOCK_WAITERS = Measure(c.LOCK_WAITING, "sum", "none")
LOCK_WAIT_AGE = Measure(c.LOCK_WAIT_TIME_MAX, "max", "s", stacked=False,
                        thresholds=green_orange_red(LOCK_WAIT_WARNING_S, LOCK_WAIT_CRITICAL_S))
ROOT_BLOCKING = Measure(c.LOCK_ROOT_BLOCKING, "sum", "none")
DIRECT_BLOCKING = Measure(c.LOCK_BLOCKING, "sum", "none")
OPENED = Measure(c.CONNECTION_OPENED, "sum", "cps", stacked=False, rate=True)

_ROOT_NOTE = (" A root blocker holds the lock without waiting for one itself: end it and the "
              "whole queue moves. 'idle in transaction' there is a client that left a "
              "transaction open.")


def root_blockers_table(*matchers: str, w: int, h: int) -> table.Panel:
    """The root blockers the agent names by pid, with the statement that ends each."""
    columns = ("target", "pid", "application_name", "client_addr", "usename", "datname",
               "state")
    return (_instant_table(
        "Root blockers (pid)",
        "The root blockers now (at most 5, most sessions queued first), by pid: holding a "
        "lock others queue behind, directly or behind other waiters, without waiting "
        "themselves. End one with SELECT pg_terminate_backend(pid) (its transaction rolls "
        "back); intermediates in the queue are not listed.",
        columns, [("A", f"max by ({', '.join(columns)}) "
                        f"({sel(c.LOCK_ROOT_BLOCKER, *matchers)})", "Queued behind it")],
        sort="Queued behind it", w=w, h=h)
        .links(runbook("PostgreSQLBlockedByIdleInTransaction"))
        .override_by_name("Application", _drilldown_link("${__value.raw}",
                                                         "${__data.fields.Target}")))


# ---------------------------------------------------------------------------------------------
# Variables


def datasource_variable() -> gd.DatasourceVariable:
    return (gd.DatasourceVariable("datasource").label("Data source").type("prometheus")
            .description("Prometheus (or Mimir/Thanos) that stores the agent's metrics."))


def _label_variable(name: str, label: str, description: str, source: str) -> gd.QueryVariable:
    """A multi-value variable over one label's values, "All" matching series without it."""
    return (gd.QueryVariable(name).label(label).description(description)
            .datasource(DATASOURCE)
            .query(f"label_values({source}, {name})")
            .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(gm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def scope_variables() -> list[gd.QueryVariable]:
    """job, cluster and target: which agents and servers the dashboard shows."""
    up = c.AGENT_UP.prometheus_name
    return [
        _label_variable("job", "Job", "Prometheus scrape job of the agent (the 'job' label).",
                        up),
        _label_variable("cluster", "Cluster",
                        "The 'cluster' label your Prometheus adds (external labels or "
                        "relabelling); All includes series without one.",
                        f'{up}{{job=~"$job"}}'),
        _label_variable("target", "Target",
                        "Target name as configured in pgconn-agent (the 'target' label).",
                        f'{up}{{job=~"$job", cluster=~"$cluster"}}'),
    ]


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
    d = (gd.Dashboard(title).uid(uid).description(description).tags([TAG, "postgresql"])
         .editable().tooltip(gm.DashboardCursorSync.CROSSHAIR)
         .time("now-1h", "now").refresh("30s").timezone("browser")
         .link(gd.DashboardLink("pgconn-agent dashboards").type(gm.DashboardLinkType.DASHBOARDS)
               .tags([TAG]).as_dropdown(False).include_vars(True).keep_time(True))
         .link(gd.DashboardLink("Runbooks").type(gm.DashboardLinkType.LINK).url(RUNBOOK_BASE)
               .target_blank(True))
         .with_variable(datasource_variable()))
    for variable in scope_variables():
        d = d.with_variable(variable)
    return d


# ---------------------------------------------------------------------------------------------
# Connections overview


def connections_overview() -> gd.Dashboard:
    app = 'application_name=~"$application_name"'
    count = c.CONNECTION_COUNT
    by_app = ("target", "application_name")
    by_holder = ("target", "application_name", "client_addr")
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
        .links(runbook("PostgreSQLConnectionsNearLimit", "PostgreSQLConnectionsExhausted"))
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
        "'(unset)' means the client sends no application_name: look at the host panel. "
        "Click a series to drill down into that application.",
        query(f"sum by (target, application_name) ({sel(count, app)})",
              "{{target}} {{application_name}}"),
        unit="none", w=12, h=9, stacked=True)
        .data_links(holder_links())
        .links(runbook("PostgreSQLApplicationHoldsMostSlots")))
    d = d.with_panel(series(
        "Client backends by client host",
        "Client backends per client address ('local' for unix sockets). Several hosts with the "
        "same count usually mean one pool per instance multiplied by replicas.",
        query(f"sum by (target, client_addr) ({sel(count, app)})", "{{target}} {{client_addr}}"),
        unit="none", w=12, h=9, stacked=True))
    d = d.with_panel(Measure(count, "sum", "none", (IDLE,)).panel(
        "Idle client backends by application and host",
        "Idle sessions per application and host: connections a pool keeps open without using "
        "them. A holder with many idle sessions for minutes is hoarding slots. Click a series "
        "to drill down.", by_holder, app, h=9)
        .data_links(holder_links())
        .links(runbook("PostgreSQLIdleConnectionHoarding")))
    d = d.with_panel(holders_table(
        "Top holders",
        "One row per holder group (target, application, host, user, database, state), largest "
        "first, with the oldest time in that state and the oldest open transaction. Click an "
        "application to drill down into it. Groups the agent's cardinality cap folded appear "
        "as '(other: folded by cardinality cap)'.",
        ("target", "application_name", "client_addr", "usename", "datname", "state"), app,
        w=24, h=11))

    d = d.with_row(gd.Row("Idle in transaction and locks"))
    d = d.with_panel(IDLE_IN_TX_COUNT.panel(
        "Idle in transaction by application",
        "Sessions inside an open transaction doing nothing: they hold their slot and their "
        "locks until the client commits, rolls back or disconnects.", by_app, app)
        .links(runbook("PostgreSQLIdleInTransaction")))
    d = d.with_panel(IDLE_IN_TX_AGE.panel(
        "Oldest idle in transaction by application",
        "Longest time a session of the application has been idle in transaction (now - "
        "state_change). Orange from 1 minute, red from 5 minutes.", by_app, app))
    d = d.with_panel(XACT_AGE.panel(
        "Oldest open transaction by application",
        "Longest-running transaction per application (now - xact_start), any state. Long "
        "transactions hold locks and hold back vacuum. Orange from 5 minutes, red from 30.",
        by_app, app).links(runbook("PostgreSQLLongTransaction")))
    d = d.with_panel(WAITING.panel(
        "Waiting sessions by wait event type",
        "Active sessions that are waiting, by wait_event_type (Lock, LWLock, IO, Client...).",
        ("target", "wait_event_type"), app))
    d = d.with_panel(LOCK_WAITERS.panel(
        "Lock waiters by application",
        "Sessions waiting for a heavyweight lock, by the waiting application and lock mode.",
        ("target", "application_name", "mode"), app, w=8)
        .links(runbook("PostgreSQLLockWaitsPilingUp")))
    d = d.with_panel(ROOT_BLOCKING.panel(
        "Root blockers by application",
        "Sessions queued behind each holder group's root blockers, directly or behind other "
        "waiters, by the root's application, host and state." + _ROOT_NOTE,
        (*by_holder, "state"), app, w=8, suffix=" holds up")
        .links(runbook("PostgreSQLBlockedByIdleInTransaction")))
    d = d.with_panel(DIRECT_BLOCKING.panel(
        "Blocked directly by application",
        "Sessions blocked directly (pg_blocking_pids) by each holder group's sessions, roots "
        "and intermediates alike: a waiter at the head of a tuple-lock queue blocks the ones "
        "behind it (state 'active') while itself waiting for the root. Compare with the root "
        "blockers panel.", (*by_holder, "state"), app, w=8, suffix=" blocks"))
    d = d.with_panel(LOCK_WAIT_AGE.panel(
        "Longest lock wait by application",
        "Longest current heavyweight-lock wait per waiting application. Orange from 10 s, red "
        "from 60 s.", by_app, app, w=8))
    d = d.with_panel(root_blockers_table(app, w=16, h=8))

    d = d.with_row(gd.Row("Churn and session outcomes"))
    d = d.with_panel(OPENED.panel(
        "New connections per second by application and host",
        "Client backends opened per second (new backends seen by the agent's polls). A steady "
        "high rate means a client connects per request or a pool that keeps recycling.",
        by_holder, app).links(runbook("PostgreSQLConnectionChurn")))
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
        _instant_table(
            "Role and database connection limits",
            "Connection limits set on roles (rolconnlimit) or databases (datconnlimit), with "
            "the client backends of that role or database now; 'none set' when a target has "
            "no limit of that scope (In use then counts all its client backends). A limit "
            "reached gives 'too many connections for role/database'. Usage is summed over the "
            "agent's groups, so it needs usename/datname among the configured group "
            "dimensions.",
            ("target", "scope", "name"),
            [("A", _limits(), "Limit"), ("B", _limit_usage(), "In use")], sort="In use",
            w=8, h=8)
        .links(runbook("PostgreSQLConnectionLimitNearlyReached"))
        .override_by_name("Limit", [gm.DynamicConfigValue(id_val="mappings", value=[
            {"type": "value", "options": {str(NONE_SET): {"text": "none set", "index": 0}}}])]))

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
        .links(runbook("PgconnAgentTargetDown", "PgconnAgentPollsStalled"))
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
        unit="none", w=7, h=7, thresholds=steps((None, "green"), (1, "red")))
        .links(runbook("PgconnAgentPollsFailing", "PgconnAgentPollsStalled")))
    d = d.with_panel(series(
        "Folded groups and hidden sessions",
        "Groups folded into '(other: folded by cardinality cap)' (raise the cap or drop a "
        "dimension) and sessions whose details the agent's role cannot see (grant pg_monitor).",
        query(f"max by (target) ({sel(c.GROUPS_FOLDED)})", "{{target}} folded groups", ref="A"),
        query(f"max by (target) ({sel(c.SESSIONS_HIDDEN)})", "{{target}} hidden sessions",
              ref="B"),
        unit="none", w=6, h=7, thresholds=steps((None, "green"), (1, "orange")))
        .links(runbook("PgconnAgentGroupsFolded", "PgconnAgentSessionsHidden")))

    d = d.with_row(gd.Row("Client processes on the agent's host"))
    d = d.with_panel(
        table.Panel().title("Connections by client process").datasource(DATASOURCE)
        .description("Connections held by each process on the agent's own host, matched "
                     "through /proc (only clients whose client_addr is one of that host's "
                     "addresses). One process with many connections: several pools or one "
                     "oversized pool; many processes with a few each: instances multiply.")
        .span(16).height(8).unit("none").thresholds(NEUTRAL)
        .with_target(query(f"sum by (target, pid, command) ({sel(c.CLIENT_PROCESS_CONNECTIONS)})",
                           ref="A", instant=True, table_format=True))
        .with_transformation(gm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True},
            "renameByName": {"Value": "Connections", "target": "Target", "pid": "PID",
                             "command": "Command"},
        }))
        .sort_by([_sort("Connections")]))
    d = d.with_panel(series(
        "Connections not matched to a process",
        "Connections from the agent's host that no readable process owns: closed since the "
        "poll, another network namespace, or an agent without CAP_SYS_PTRACE.",
        query(f"max by (target) ({sel(c.CLIENT_PROCESS_UNRESOLVED)})", "{{target}} unresolved"),
        unit="none", w=8, h=8, thresholds=steps((None, "green"), (1, "orange"))))
    return d


def _limit_line() -> list[gm.DynamicConfigValue]:
    return [
        gm.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "A"}),
        gm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        gm.DynamicConfigValue(id_val="custom.lineWidth", value=2),
        gm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
        gm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
    ]


NONE_SET = -1
"""The limit a row of a scope without any limit shows (PostgreSQL's own "no limit" value)."""
_SCOPES = (("role", "usename"), ("database", "datname"))


def _none_set(value: str, scope: str) -> str:
    """``value`` per target labelled as the "none set" row of ``scope``."""
    return (f'label_replace(label_replace({value}, "scope", "{scope}", "", ""), '
            f'"name", "none set", "", "")')


def _limits() -> str:
    """Each limit, and a "none set" row (value -1) per target and scope without one."""
    expr = f"max by (target, scope, name) ({sel(c.CONNECTION_LIMIT)})"
    for scope, _ in _SCOPES:
        expr += (f" or on (target, scope) "
                 f"{_none_set(f'(0 * max by (target) ({sel(c.AGENT_UP)}) + {NONE_SET})', scope)}")
    return expr


def _limit_usage() -> str:
    """Client backends of each role/database that has a limit, labelled like the limit; all
    client backends on a "none set" row."""
    parts = []
    for scope, label in _SCOPES:
        relabelled = (f'label_replace(label_replace({sel(c.CONNECTION_COUNT)}, '
                      f'"scope", "{scope}", "", ""), "name", "$1", "{label}", "(.*)")')
        limit = sel(c.CONNECTION_LIMIT, f'scope="{scope}"')
        parts.append(f"(sum by (target, scope, name) ({relabelled})"
                     f" and on (target, scope, name) {limit})")
    expr = " or ".join(parts)
    for scope, _ in _SCOPES:
        expr += (f" or on (target, scope) "
                 f"{_none_set(f'sum by (target) ({sel(c.CONNECTION_COUNT)})', scope)}")
    return expr


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
        unit="percentunit", thresholds=green_orange_red(0.5, 0.8), w=6, h=6)
        .links(runbook("PostgreSQLApplicationHoldsMostSlots")))
    d = d.with_panel(single_stat(
        "Idle share",
        "Fraction of this application's connections that are idle: high means its pools keep "
        "more connections than they use (over-sized pool, or one pool per client instance).",
        query(f'(sum by (target) ({sel(count, app, IDLE)})'
              f" or on (target) 0 * sum by (target) ({sel(count, app)}))"
              f" / on (target) sum by (target) ({sel(count, app)})", "{{target}}"),
        unit="percentunit", thresholds=green_orange_red(0.5, 0.8), w=6, h=6)
        .links(runbook("PostgreSQLIdleConnectionHoarding")))
    d = d.with_panel(single_stat(
        "Client hosts",
        "Distinct client hosts holding connections for this application.",
        query(f"count by (target) (sum by (target, client_addr) ({sel(count, app)}))",
              "{{target}}"),
        unit="none", thresholds=NEUTRAL, w=6, h=6))
    d = d.with_panel(Measure(count, "sum", "none").panel(
        "Connections by host and state",
        "This application's client backends per client host and state, stacked.",
        ("target", "client_addr", "state"), app, w=16, h=9)
        .links(runbook("PostgreSQLApplicationHostHoldsMostSlots")))
    d = d.with_panel(Measure(count, "sum", "none").panel(
        "Connections by user and database",
        "This application's client backends per role and database.",
        ("target", "usename", "datname"), app, w=8, h=9))
    d = d.with_panel(holders_table(
        "Holder groups",
        "This application's groups (host, user, database, state) with the oldest time in state "
        "and the oldest open transaction.",
        ("target", "application_name", "client_addr", "usename", "datname", "state"), app,
        w=24, h=9))

    by_host = ("target", "client_addr")
    d = d.with_row(gd.Row("Ages"))
    d = d.with_panel(IDLE_AGE.panel(
        "Oldest idle session by host",
        "Longest time one of this application's sessions has been idle, per host. Idle for "
        "minutes while the server is full is a pool holding slots it does not need.",
        by_host, app, w=8))
    d = d.with_panel(IDLE_IN_TX_AGE.panel(
        "Oldest idle in transaction by host",
        "Longest time one of this application's sessions has been idle in transaction, per "
        "host. Orange from 1 minute, red from 5: a transaction left open across an await or a "
        "network call.", by_host, app, w=8).links(runbook("PostgreSQLIdleInTransaction")))
    d = d.with_panel(XACT_AGE.panel(
        "Oldest open transaction by host and state",
        "Longest-running transaction of this application (now - xact_start) per host and "
        "state. Orange from 5 minutes, red from 30.", (*by_host, "state"), app, w=8))

    d = d.with_row(gd.Row("Locks and waits"))
    d = d.with_panel(ROOT_BLOCKING.panel(
        "Sessions queued behind this application's root blockers",
        "Sessions (of any application) queued, directly or behind other waiters, behind this "
        "application's root blockers, per host and state." + _ROOT_NOTE,
        (*by_host, "state"), app, w=8)
        .links(runbook("PostgreSQLBlockedByIdleInTransaction")))
    d = d.with_panel(DIRECT_BLOCKING.panel(
        "Sessions this application blocks",
        "Sessions (of any application) blocked directly by this application's sessions, per "
        "blocking host and state, roots and intermediates alike. 'idle in transaction' here: "
        "the client left a transaction open while others wait for its locks. 'active' "
        "blockers are usually waiters that head a queue behind another blocker.",
        (*by_host, "state"), app, w=8))
    d = d.with_panel(LOCK_WAITERS.panel(
        "This application's lock waits",
        "This application's sessions waiting for a heavyweight lock, by lock type and mode.",
        ("target", "locktype", "mode"), app, w=8))
    d = d.with_panel(ROOT_BLOCKING.panel(
        "Blockers on the same targets (what may block it)",
        "Root blockers on the targets, any application: the metrics do not pair a waiter with "
        "its blocker; while this application waits, these are the candidates (the root "
        "blockers table names their pids).",
        ("target", "application_name", "client_addr", "state"), w=8))
    d = d.with_panel(LOCK_WAIT_AGE.panel(
        "Longest lock wait",
        "Longest current heavyweight-lock wait of this application's sessions, per database. "
        "Orange from 10 s, red from 60 s.", ("target", "datname"), app, w=8))
    d = d.with_panel(WAITING.panel(
        "Waiting sessions by wait event",
        "This application's active sessions that are waiting, by wait event type and event.",
        ("target", "wait_event_type", "wait_event"), app, w=8))

    d = d.with_row(gd.Row("Churn"))
    d = d.with_panel(OPENED.panel(
        "New connections per second by host",
        "Client backends this application opened per second, per host.", by_host, app, w=24))
    return d


# ---------------------------------------------------------------------------------------------
# PgBouncer pools


def pgbouncer_pools() -> gd.Dashboard:
    """PgBouncer targets: the pools' queues and saturation, and the clients behind them."""
    app = 'application_name=~"$application_name"'
    pool = "target, database, user"
    clients, servers = c.POOLER_CLIENTS, c.POOLER_SERVERS
    waiting = 'state="waiting"'
    d = (base("PgBouncer pools (pgconn-agent)", PGBOUNCER_UID,
              "PgBouncer targets (a DSN with dbname=pgbouncer): clients queueing for a pool at "
              "its size, the longest wait, pool saturation and limits, and the client "
              "applications and hosts behind the pooler.")
         .with_variable(_label_variable(
             "application_name", "Application",
             "application_name of PgBouncer's clients; '(unset)' when the client sends none.",
             sel(c.POOLER_CLIENT_COUNT))))

    d = d.with_row(gd.Row("Pools"))
    d = d.with_panel(series(
        "PgBouncer clients waiting",
        "Clients per pool (database/user) waiting inside PgBouncer for a server connection: "
        "the pool is at its size while the server may have slots to spare.",
        query(f"sum by ({pool}) ({sel(clients, waiting)})",
              "{{target}} {{database}}/{{user}}"),
        unit="none", w=12, thresholds=steps((None, "green"), (1, "orange"))))
    d = d.with_panel(series(
        "PgBouncer longest wait",
        "Longest time a client of the pool has been waiting for a server connection (maxwait). "
        "Orange from 1 s, red from 5 s.",
        query(f"max by ({pool}) ({sel(c.POOLER_WAIT_MAX)})",
              "{{target}} {{database}}/{{user}}"),
        unit="s", w=12, thresholds=green_orange_red(1.0, 5.0)))
    d = d.with_panel(series(
        "Pool saturation",
        "Server connections of each pool (all states) divided by its size (pool_size + "
        "reserve_pool). At 100 % new transactions queue.",
        query(f"sum by ({pool}) ({sel(servers)}) / on ({pool}) "
              f"max by ({pool}) ({sel(c.POOLER_POOL_SIZE)})",
              "{{target}} {{database}}/{{user}}"),
        unit="percentunit", w=8, thresholds=green_orange_red(0.8, 1.0)))
    d = d.with_panel(series(
        "Server connections by state",
        "PgBouncer's server connections by state: active (held by a client), idle, used, "
        "tested, login. These are the PostgreSQL slots the pooler takes.",
        query(f"sum by (target, state) ({sel(servers)})", "{{target}} {{state}}"),
        unit="none", w=8, stacked=True))
    d = d.with_panel(series(
        "Pool sizes and database limits",
        "Each pool's size (pool_size + reserve_pool) and each database's max_db_connections "
        "(where set): pool sizes times pools must fit the server's usable slots.",
        query(f"max by ({pool}, pool_mode) ({sel(c.POOLER_POOL_SIZE)})",
              "{{target}} {{database}}/{{user}} size ({{pool_mode}})", ref="A"),
        query(f"max by (target, database) ({sel(c.POOLER_DATABASE_MAX)})",
              "{{target}} {{database}} max_db_connections", ref="B"),
        unit="none", w=8))

    d = d.with_row(gd.Row("Clients behind the pooler"))
    d = d.with_panel(series(
        "PgBouncer clients per application",
        "PgBouncer's client connections per application_name and state: who waits and who "
        "holds the pools' server connections.",
        query(f"sum by (target, application_name, state) ({sel(c.POOLER_CLIENT_COUNT, app)})",
              "{{target}} {{application_name}} {{state}}"),
        unit="none", w=12, stacked=True))
    d = d.with_panel(series(
        "PgBouncer clients per host",
        "PgBouncer's client connections per client address: the hosts PostgreSQL no longer "
        "sees behind the pooler.",
        query(f"sum by (target, client_addr) ({sel(c.POOLER_CLIENT_COUNT, app)})",
              "{{target}} {{client_addr}}"),
        unit="none", w=6, stacked=True))
    d = d.with_panel(series(
        "Client connections of max_client_conn",
        "All client connections divided by max_client_conn; beyond it PgBouncer refuses new "
        "clients. Orange from 80 %, red from 95 %.",
        query(f"sum by (target) ({sel(c.POOLER_CLIENT_COUNT)}) / on (target) "
              f"max by (target) ({sel(c.POOLER_CLIENT_MAX)})", "{{target}}"),
        unit="percentunit", w=6, thresholds=green_orange_red(0.8, 0.95)))
    return d


# ---------------------------------------------------------------------------------------------
# Output

DASHBOARDS = {
    "connections-overview.json": connections_overview,
    "application-drilldown.json": application_drilldown,
    "pgbouncer-pools.json": pgbouncer_pools,
}
PGBOUNCER_DASHBOARDS = frozenset({"pgbouncer-pools.json"})
"""Dashboards of PgBouncer targets; the others read PostgreSQL targets' metrics."""


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
