"""The application drill-down: one application's connections, ages, locks and churn.

Its panels are the overview's measures (:mod:`dashboards.measures`) grouped by host instead
of by application. Each row is one function below, in the order the rows appear.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gd

from agent import contract as c
from dashboards import measures as m
from dashboards import thresholds as t
from dashboards.layout import Panel, Row, application_variable, dashboard
from dashboards.links import DRILLDOWN_UID, Alert, runbook
from dashboards.panels import holders_table, query, single_stat
from dashboards.promql import IDLE, THE_APP, sel, usable
from dashboards.thresholds import NEUTRAL

BY_HOST = ("target", "client_addr")
COUNT = c.CONNECTION_COUNT


def application_drilldown() -> gd.Dashboard:
    return dashboard(
        "PostgreSQL application drill-down (pgconn-agent)", DRILLDOWN_UID,
        "One application's connections: hosts and states over time, idle and "
        "idle-in-transaction ages, what it blocks and what it waits for.",
        application_variable(multi=False),
        [_holdings(), _ages(), _locks(), _churn()])


def _per_target(expr: str) -> str:
    return f"sum by (target) ({expr})"


def _holdings() -> Row:
    return Row("Holdings", [
        *_holding_stats(),
        m.CONNECTIONS.panel(
            "Connections by host and state",
            "This application's client backends per client host and state, stacked.",
            (*BY_HOST, "state"), THE_APP, w=16, h=9,
            runbooks=(Alert.HOST_HOLDS, Alert.APP_HOLDS)),
        m.CONNECTIONS.panel(
            "Connections by user and database",
            "This application's client backends per role and database.",
            ("target", "usename", "datname"), THE_APP, w=8, h=9),
        holders_table(
            "Holder groups",
            "This application's groups (host, user, database, state) with the oldest time in "
            "state and the oldest open transaction.",
            m.HOLDER_GROUP, THE_APP, w=24, h=9),
    ])


def _holding_stats() -> list[Panel]:
    """How much of the server the application holds now, and how idly."""
    held = _per_target(sel(COUNT, THE_APP))
    return [
        single_stat(
            "Connections held",
            "Client backends of this application now.",
            query(held, "{{target}}"), unit="none", thresholds=NEUTRAL, w=6, h=6)
        .links(runbook(Alert.APP_HOLDS)),
        single_stat(
            "Share of usable slots",
            "This application's client backends divided by the target's usable slots. "
            + t.HOLDER_SHARE.said() + ": one client holding most of the server.",
            query(f"{held} / on (target) {usable()}", "{{target}}"),
            unit="percentunit", thresholds=t.HOLDER_SHARE.steps(), w=6, h=6)
        .links(runbook(Alert.APP_HOLDS)),
        single_stat(
            "Idle share",
            "Fraction of this application's connections that are idle: high means its pools "
            "keep more connections than they use (over-sized pool, or one pool per client "
            "instance).",
            query(f"({_per_target(sel(COUNT, THE_APP, IDLE))} or on (target) 0 * {held})"
                  f" / on (target) {held}", "{{target}}"),
            unit="percentunit", thresholds=t.IDLE_SHARE.steps(), w=6, h=6)
        .links(runbook(Alert.APP_HOLDS, Alert.HOARDING)),
        single_stat(
            "Client hosts",
            "Distinct client hosts holding connections for this application.",
            query(f"count by (target) ({m.CONNECTIONS.expr(BY_HOST, THE_APP)})", "{{target}}"),
            unit="none", thresholds=NEUTRAL, w=6, h=6),
    ]


def _ages() -> Row:
    return Row("Ages", [
        m.IDLE_AGE.panel(
            "Oldest idle session by host",
            "Longest time one of this application's sessions has been idle, per host. Idle "
            "for minutes while the server is full is a pool holding slots it does not need.",
            BY_HOST, THE_APP, w=8),
        m.IDLE_IN_TX_AGE.panel(
            "Oldest idle in transaction by host",
            "Longest time one of this application's sessions has been idle in transaction, "
            "per host. " + t.IDLE_IN_TX.said()
            + ": a transaction left open across an await or a network call.",
            BY_HOST, THE_APP, w=8),
        m.XACT_AGE.panel(
            "Oldest open transaction by host and state",
            "Longest-running transaction of this application (now - xact_start) per host and "
            "state. " + t.XACT_AGE.said() + ".", (*BY_HOST, "state"), THE_APP, w=8),
    ])


def _locks() -> Row:
    return Row("Locks and waits", [
        m.ROOT_BLOCKING.panel(
            "Sessions queued behind this application's root blockers",
            "Sessions (of any application) queued, directly or behind other waiters, behind "
            "this application's root blockers, per host and state." + m.ROOT_NOTE,
            (*BY_HOST, "state"), THE_APP, w=8),
        m.DIRECT_BLOCKING.panel(
            "Sessions this application blocks",
            "Sessions (of any application) blocked directly by this application's sessions, "
            "per blocking host and state, roots and intermediates alike. 'idle in "
            "transaction' here: the client left a transaction open while others wait for its "
            "locks. 'active' blockers are usually waiters that head a queue behind another "
            "blocker.", (*BY_HOST, "state"), THE_APP, w=8),
        m.LOCK_WAITERS.panel(
            "This application's lock waits",
            "This application's sessions waiting for a heavyweight lock, by lock type and "
            "mode.", ("target", "locktype", "mode"), THE_APP, w=8),
        m.ROOT_BLOCKING.panel(
            "Blockers on the same targets (what may block it)",
            "Root blockers on the targets, any application: the metrics do not pair a waiter "
            "with its blocker; while this application waits, these are the candidates (the "
            "root blockers table names their pids).",
            ("target", "application_name", "client_addr", "state"), w=8),
        m.LOCK_WAIT_AGE.panel(
            "Longest lock wait",
            "Longest current heavyweight-lock wait of this application's sessions, per "
            "database. " + t.LOCK_WAIT.said() + ".", ("target", "datname"), THE_APP, w=8),
        m.WAITING.panel(
            "Waiting sessions by wait event",
            "This application's active sessions that are waiting, by wait event type and "
            "event.", ("target", "wait_event_type", "wait_event"), THE_APP, w=8),
        m.root_blockers_table(w=24, h=8),
    ])


def _churn() -> Row:
    return Row("Churn", [
        m.OPENED.panel(
            "New connections per second by host",
            "Client backends this application opened per second, per host.", BY_HOST, THE_APP,
            w=24),
    ])
