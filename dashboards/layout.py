"""What every dashboard shares: its frame (tags, time, links), its variables, its rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as gm

from agent import contract as c
from dashboards.links import TAG, dashboard_links
from dashboards.panels import DATASOURCE
from dashboards.promql import sel

Panel = cogbuilder.Builder[gm.Panel]


@dataclass(frozen=True, slots=True)
class Row:
    """A titled row and its panels, laid out left to right in this order."""

    title: str
    panels: Sequence[Panel]


def dashboard(title: str, uid: str, description: str, application: gd.QueryVariable,
              rows: Sequence[Row]) -> gd.Dashboard:
    """A dashboard with the shared frame and variables, ``application`` last, then ``rows``."""
    d = (gd.Dashboard(title).uid(uid).description(description).tags([TAG, "postgresql"])
         .editable().tooltip(gm.DashboardCursorSync.CROSSHAIR)
         .time("now-1h", "now").refresh("30s").timezone("browser"))
    for link in dashboard_links():
        d = d.link(link)
    for variable in (datasource_variable(), *scope_variables(), application):
        d = d.with_variable(variable)
    for row in rows:
        d = d.with_row(gd.Row(row.title))
        for panel in row.panels:
            d = d.with_panel(panel)
    return d


def datasource_variable() -> gd.DatasourceVariable:
    return (gd.DatasourceVariable("datasource").label("Data source").type("prometheus")
            .description("Prometheus (or Mimir/Thanos) that stores the agent's metrics."))


def label_variable(name: str, label: str, description: str, source: str, *,
                   multi: bool = True) -> gd.QueryVariable:
    """A variable over one label's values; multi-value ones have "All" matching series
    without the label."""
    v = (gd.QueryVariable(name).label(label).description(description)
         .datasource(DATASOURCE)
         .query(f"label_values({source}, {name})")
         .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED)
         .sort(gm.VariableSort.ALPHABETICAL_ASC))
    return v.multi(True).include_all(True).all_value(".*") if multi else v


def scope_variables() -> list[gd.QueryVariable]:
    """job, cluster and target: which agents and servers the dashboard shows."""
    up = c.AGENT_UP.prometheus_name
    return [
        label_variable("job", "Job", "Prometheus scrape job of the agent (the 'job' label).",
                       up),
        label_variable("cluster", "Cluster",
                       "The 'cluster' label your Prometheus adds (external labels or "
                       "relabelling); All includes series without one.",
                       f'{up}{{job=~"$job"}}'),
        label_variable("target", "Target",
                       "Target name as configured in pgconn-agent (the 'target' label).",
                       f'{up}{{job=~"$job", cluster=~"$cluster"}}'),
    ]


def application_variable(*, multi: bool) -> gd.QueryVariable:
    """The client sessions' application_name, one (drill-down) or several (overview)."""
    return label_variable("application_name", "Application",
                          "application_name of the client sessions; '(unset)' when the "
                          "client sends none.", sel(c.CONNECTION_COUNT), multi=multi)
