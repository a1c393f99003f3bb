"""``docs/metrics.md`` from the contract and ``docs/thresholds.md`` from the spec (written by
``scripts/generate.py``), and the spec's
table of diagnose vs alert thresholds in ``alerts/README.md``."""

from __future__ import annotations

from . import contract as c
from . import spec

INGESTION = [
    "## Instruments",
    "",
    "Counts of things present now (connections, backends, groups) are UpDownCounters:",
    "non-monotonic cumulative sums, as the semantic conventions model",
    "`db.client.connection.count`, so a backend may add them across attributes. Limits and",
    "settings (`max`, `reserved`, `limit`, `setting`), ages, ratios and `up` are gauges.",
    "Prometheus sees UpDownCounters as gauges (no `_total`).",
    "",
    "## Scraping `/metrics` versus OTLP ingestion",
    "",
    "The Prometheus names above are what Prometheus' own OTLP translation gives",
    "(`UnderscoreEscapingWithSuffixes`), and what `/metrics` serves, so queries work on either",
    "path. What differs is the identity around the series:",
    "",
    "| | scraping `/metrics` | OTLP (Collector, or Prometheus' OTLP receiver) |",
    "|---|---|---|",
    "| `job` | the scrape job's name | `service.namespace/service.name` (`pgconn-agent`; set "
    "`OTEL_SERVICE_NAME`) |",
    "| `instance` | the scraped `host:port` | `service.instance.id`: by default a UUID v5 of "
    "the host name, config file and listen address, stable across restarts; override with "
    "`OTEL_RESOURCE_ATTRIBUTES=service.instance.id=...` |",
    "| resource attributes | none (`/metrics` serves no `target_info`) | `target_info` "
    "series, unless promoted to labels by the receiver's configuration |",
    "| `target` | the agent's target name, as an ordinary label | the same |",
    "",
    "Alert rules and dashboards select by `target` and the configured job selector, so they",
    "work with either path once `job` matches.",
    "",
]
"""How the contract's instruments and identity land in Prometheus (appended to the table)."""


def metrics_markdown() -> str:
    lines = [
        "# Metrics",
        "",
        "Generated from `agent/contract.py` by `scripts/generate.py`; do not edit by hand.",
        "These names, units and attributes are pgconn-agent's public interface: they are only",
        "ever added to, never renamed.",
        "",
        f"G (group attributes) = {', '.join(c.GROUP_DIMENSIONS)}; dimensions removed with",
        "`[agent] dimensions` drop out of every metric. `target` is the target's configured name.",
        f"Unset application_name is `{c.UNSET_APPLICATION}`, unix-socket clients are "
        f"`{c.LOCAL_CLIENT}`,",
        f"sessions the agent's role may not see have state and client_addr `{c.HIDDEN}`, and "
        "groups",
        f"folded by the cardinality cap carry `{c.OVERFLOW_VALUE}` in every group attribute.",
        "",
        "| OTel name | instrument | unit | attributes | Prometheus name | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for m in c.METRICS:
        attrs = ", ".join("G" if a == c.GROUP else a for a in m.attributes)
        lines.append(f"| `{m.name}` | {m.instrument.value} | `{m.unit or '(none)'}` | {attrs} | "
                     f"`{m.prometheus_name}` | {m.description} |")
    lines += ["", "`pgconn_agent.poll.duration` buckets (seconds): "
              + ", ".join(f"{b:g}" for b in c.POLL_DURATION_BUCKETS), "",
              *_attribute_values(), *INGESTION]
    return "\n".join(lines + _scopes())


def _scopes() -> list[str]:
    """The fleet model: which series one server exports once, and which once per database."""
    def names(scope: str) -> str:
        return ", ".join(f"`{m.name}`" for m in c.METRICS if c.scope(m) == scope)

    return [
        "## Server, database and target scope",
        "",
        "Targets that reach the same PostgreSQL server (same `server` setting, else same",
        "host:port; a second host name for one server is recognised by",
        "`pg_control_system().system_identifier`) share one connection and one poll, and each",
        "series is exported once (see docs/fleet.md):",
        "",
        f"- **database**: a point whose `{c.DATABASE_ATTRIBUTE}` names a database is exported "
        f"under the `target` of that database (the first by name if several name it); points "
        f"of databases no target names go to the server's owner. {names('database')}.",
        "- **server**: exported once per server, under the `target` of its owner (the first of "
        f"its targets by name). {names('server')}.",
        "- **target**: the agent's view of each configured target, exported for every target. "
        f"{names('target')}.",
        "",
    ]


def _attribute_values() -> list[str]:
    lines = ["## Attribute values", "", "Attributes whose values are a closed set "
             "(declared in `agent/spec.py`):", "", "| attribute | values |", "|---|---|"]
    for name, values in spec.ATTRIBUTE_VALUES.items():
        lines.append(f"| `{name}` | {', '.join(f'`{v}`' for v in values)} |")
    return [*lines, ""]


def _number(value: float) -> str:
    return f"{value:g}"


def twins_markdown() -> str:
    """Diagnose thresholds beside the alert thresholds for the same condition (spec.TWINS)."""
    rows = ["| `[thresholds]` key (diagnose) | default | alert threshold | default | why they "
            "differ |", "|---|---|---|---|---|"]
    for tw in spec.TWINS:
        d, a = spec.DIAGNOSE[tw.diagnose], spec.ALERTS[tw.alert]
        rows.append(f"| `{d.name}` | {_number(d.default)} | `{a.name}` | {_number(a.default)} | "
                    f"{tw.differs or 'the same'} |")
    return "\n".join(rows) + "\n"


def _uses(t: spec.Threshold) -> str:
    return ", ".join(u.value for u in spec.Use if u in t.used_in)


def _threshold_rows(table: tuple[spec.Threshold, ...]) -> list[str]:
    rows = ["| name | default | unit | meaning | read by |", "|---|---|---|---|---|"]
    rows += [f"| `{t.name}` | {_number(t.default)} | {t.unit} | {t.description} | {_uses(t)} |"
             for t in table]
    return [*rows, ""]


def _kept_in_order(table: tuple[spec.Threshold, ...]) -> str:
    names = {t.name for t in table}
    pairs = [f"`{lo}` < `{hi}`" for lo, hi in spec.ORDERED if lo in names and hi in names]
    return f"Each warning stays below its critical: {', '.join(pairs)}."


def thresholds_markdown() -> str:
    """``docs/thresholds.md``: every tunable number of the spec, where it is set and read."""
    lines = [
        "# Thresholds", "",
        "Generated from `agent/spec.py` by `scripts/generate.py`; do not edit. Every tunable",
        "number is declared there once, with its default, unit, meaning and readers.", "",
        "## `[thresholds]`: where `diagnose` findings start", "",
        "Set in the config file's `[thresholds]` table (Helm: `thresholds`, typed by",
        "`values.schema.json`); `pgconn-agent check-config FILE` prints the effective values.",
        "Counts are integers >= 1, ratios in (0, 1], the rest numbers > 0.",
        _kept_in_order(spec.DIAGNOSE_THRESHOLDS), "",
        *_threshold_rows(spec.DIAGNOSE_THRESHOLDS),
        "## Alert rules", "",
        "Set with `pgconn-agent rules --set NAME=VALUE` (Helm: `alerts.thresholds.NAME`); "
        "durations",
        "(`*_for_seconds`) are whole seconds; see [`alerts/README.md`](../alerts/README.md).",
        _kept_in_order(spec.ALERT_THRESHOLDS), "",
        *_threshold_rows(spec.ALERT_THRESHOLDS),
        "## Dashboard colour steps", "",
        "Fixed in the dashboards (`dashboards/`); the dashboards also colour by the",
        "diagnose and alert thresholds read by `dashboards` above.", "",
        *_threshold_rows(spec.PANEL_THRESHOLDS),
        "## Diagnose beside alerts", "",
        twins_markdown(),
    ]
    return "\n".join(lines)


GENERATED = {"docs/metrics.md": metrics_markdown, "docs/thresholds.md": thresholds_markdown}
"""Files written from the contract and the spec by ``scripts/generate.py``."""

