"""The panel kinds the dashboards are made of: time series, stats, instant tables, measures.

Each factory fixes what every panel of its kind shares (data source, legend, reduction,
colours); a dashboard module only says what differs: title, description, query, size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    TableSortByFieldState,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as gc
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from agent import contract as c
from dashboards.links import Alert, application_cell_link, runbook
from dashboards.promql import sel
from dashboards.thresholds import NEUTRAL

DATASOURCE = gm.DataSourceRef(type_val="prometheus", uid="${datasource}")


def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
          table_format: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def series(title: str, description: str, *targets: prometheus.Dataquery, unit: str,
           w: int = 12, h: int = 8, stacked: bool = False,
           thresholds: gd.ThresholdsConfig | None = None) -> timeseries.Panel:
    """A time series with a table legend (last, max); ``thresholds`` drawn dashed."""
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
    """A stat of the last value, coloured by ``thresholds``, with its sparkline."""
    p = (stat_base(title, description, unit, w, h, thresholds)
         .color_mode(gc.BigValueColorMode.VALUE).graph_mode(gc.BigValueGraphMode.AREA))
    for t in targets:
        p = p.with_target(t)
    return p


def stat_base(title: str, description: str, unit: str, w: int, h: int,
              thresholds: gd.ThresholdsConfig) -> stat.Panel:
    """What every stat panel shares; the caller sets its colour and graph modes."""
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
            .span(w).height(h).thresholds(thresholds)
            .text_mode(gc.BigValueTextMode.VALUE_AND_NAME).reduce_options(reduce_last()))


def reduce_last() -> ReduceDataOptions:
    return ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def unit_override(unit: str) -> list[gm.DynamicConfigValue]:
    return [gm.DynamicConfigValue(id_val="unit", value=unit)]


def value_text(value: float, text: str) -> list[gm.DynamicConfigValue]:
    """An override showing ``text`` where the value is ``value``."""
    return [gm.DynamicConfigValue(id_val="mappings", value=[
        {"type": "value", "options": {f"{value:g}": {"text": text, "index": 0}}}])]


def limit_line() -> list[gm.DynamicConfigValue]:
    """An override drawing a series as a red dashed line outside the stack."""
    return [
        gm.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "A"}),
        gm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        gm.DynamicConfigValue(id_val="custom.lineWidth", value=2),
        gm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
        gm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
    ]


# ---------------------------------------------------------------------------------------------
# Tables of instant values


_RENAME = {"application_name": "Application", "client_addr": "Client host", "usename": "User",
           "datname": "Database", "state": "State", "target": "Target", "pid": "PID",
           "scope": "Scope", "name": "Name"}


def table_base(title: str, description: str, w: int, h: int) -> table.Panel:
    return (table.Panel().title(title).description(description).datasource(DATASOURCE)
            .span(w).height(h).unit("none").thresholds(NEUTRAL))


def sorted_desc(name: str) -> list[Builder[gc.TableSortByFieldState]]:
    return [TableSortByFieldState().display_name(name).desc(True)]


def instant_table(title: str, description: str, columns: Sequence[str],
                  values: Sequence[tuple[str, str, str]], *, sort: str, w: int, h: int
                  ) -> table.Panel:
    """One row per label set: ``columns`` (labels) then one column per (ref, expr, name)."""
    p = table_base(title, description, w, h)
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
            .sort_by(sorted_desc(sort)))


def holders_table(title: str, description: str, by: Sequence[str], *matchers: str,
                  w: int = 24, h: int = 10) -> table.Panel:
    """One row per holder group: connections, oldest state age, oldest transaction age; the
    application links into its drill-down."""
    labels = ", ".join(by)
    return (instant_table(title, description, by, [
        ("A", f"sum by ({labels}) ({sel(c.CONNECTION_COUNT, *matchers)})", "Connections"),
        ("B", f"max by ({labels}) ({sel(c.STATE_AGE_MAX, *matchers)})", "Oldest in state"),
        ("C", f"max by ({labels}) ({sel(c.TRANSACTION_AGE_MAX, *matchers)})",
         "Oldest transaction"),
    ], sort="Connections", w=w, h=h)
        .override_by_name("Oldest in state", unit_override("s"))
        .override_by_name("Oldest transaction", unit_override("s"))
        .override_by_name("Application", application_cell_link()))


# ---------------------------------------------------------------------------------------------
# Measures: one metric aggregated one way, drawn per holder on several dashboards


@dataclass(frozen=True, slots=True)
class Measure:
    """What a per-group time-series panel draws; each dashboard chooses the ``by`` labels."""

    metric: c.MetricSpec
    agg: str
    unit: str
    matchers: tuple[str, ...] = ()
    thresholds: gd.ThresholdsConfig | None = None
    stacked: bool = True
    rate: bool = False
    runbooks: tuple[Alert, ...] = ()
    """The alerts this measure helps confirm, linked from each of its panels."""

    def expr(self, by: Sequence[str], *matchers: str) -> str:
        selector = sel(self.metric, *self.matchers, *matchers)
        inner = f"rate({selector}[$__rate_interval])" if self.rate else selector
        return f"{self.agg} by ({', '.join(by)}) ({inner})"

    def panel(self, title: str, description: str, by: Sequence[str], *matchers: str,
              w: int = 12, h: int = 8, suffix: str = "", legend: str = "",
              runbooks: Sequence[Alert] = ()) -> timeseries.Panel:
        """The panel; the legend names the ``by`` labels (then ``suffix``) unless given.

        It links the measure's runbooks, then ``runbooks`` (what this grouping confirms).
        """
        legend = legend or " ".join("{{" + label + "}}" for label in by) + suffix
        p = series(title, description, query(self.expr(by, *matchers), legend),
                   unit=self.unit, w=w, h=h, stacked=self.stacked, thresholds=self.thresholds)
        alerts = (*self.runbooks, *runbooks)
        return p.links(runbook(*alerts)) if alerts else p
