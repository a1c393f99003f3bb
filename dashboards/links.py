"""Links: holders into the drill-down, panels to their runbook section."""

from __future__ import annotations

from enum import StrEnum

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as gm

from agent.alert_rules import RUNBOOK_BASE

OVERVIEW_UID = "pgconn-connections-overview"
DRILLDOWN_UID = "pgconn-application-drilldown"
PGBOUNCER_UID = "pgconn-pgbouncer-pools"
TAG = "pgconn-agent"
"""The tag of every dashboard here; the dashboard links list the dashboards carrying it."""


class Alert(StrEnum):
    """The alerts whose runbook sections the panels link (declared in :mod:`agent.alerts`)."""

    NEAR_LIMIT = "PostgreSQLConnectionsNearLimit"
    EXHAUSTED = "PostgreSQLConnectionsExhausted"
    APP_HOLDS = "PostgreSQLApplicationHoldsMostSlots"
    HOST_HOLDS = "PostgreSQLApplicationHostHoldsMostSlots"
    HOARDING = "PostgreSQLIdleConnectionHoarding"
    CHURN = "PostgreSQLConnectionChurn"
    LIMIT = "PostgreSQLConnectionLimitNearlyReached"
    IDLE_IN_TRANSACTION = "PostgreSQLIdleInTransaction"
    LONG_TRANSACTION = "PostgreSQLLongTransaction"
    LOCK_WAITS = "PostgreSQLLockWaitsPilingUp"
    BLOCKED_BY_IDLE = "PostgreSQLBlockedByIdleInTransaction"
    TARGET_DOWN = "PgconnAgentTargetDown"
    POLLS_STALLED = "PgconnAgentPollsStalled"
    POLLS_FAILING = "PgconnAgentPollsFailing"
    GROUPS_FOLDED = "PgconnAgentGroupsFolded"
    SESSIONS_HIDDEN = "PgconnAgentSessionsHidden"
    POOL_WAITS = "PgBouncerClientsWaiting"
    POOL_CLIENT_LIMIT = "PgBouncerClientLimitNear"


def drilldown_url(application: str, target: str) -> str:
    """The drill-down for one application on one target, keeping the other variables."""
    return (f"/d/{DRILLDOWN_UID}?var-application_name={application}&var-target={target}"
            "&${datasource:queryparam}&${job:queryparam}&${cluster:queryparam}"
            "&${__url_time_range}")


def application_cell_link() -> list[gm.DynamicConfigValue]:
    """A table's Application cell opening the drill-down for that row's application and target.
    """
    return [gm.DynamicConfigValue(id_val="links", value=[{
        "title": "Drill down into this application",
        "url": drilldown_url("${__value.raw}", "${__data.fields.Target}")}])]


def holder_links() -> list[Builder[gm.DashboardLink]]:
    """Data links of series labelled by application_name and target."""
    return [gd.DashboardLink("Drill down into ${__field.labels.application_name}")
            .url(drilldown_url("${__field.labels.application_name}",
                               "${__field.labels.target}"))]


def runbook(*alerts: Alert) -> list[Builder[gm.DashboardLink]]:
    """Panel links to the runbook sections of the alerts a panel helps confirm."""
    return [gd.DashboardLink(f"Runbook: {name}").type(gm.DashboardLinkType.LINK)
            .url(f"{RUNBOOK_BASE}#{name.lower()}").target_blank(True) for name in alerts]


def dashboard_links() -> list[Builder[gm.DashboardLink]]:
    """The links atop every dashboard: the other dashboards (variables and time kept), runbooks.
    """
    return [gd.DashboardLink("pgconn-agent dashboards").type(gm.DashboardLinkType.DASHBOARDS)
            .tags([TAG]).as_dropdown(False).include_vars(True).keep_time(True),
            gd.DashboardLink("Runbooks").type(gm.DashboardLinkType.LINK).url(RUNBOOK_BASE)
            .target_blank(True)]
