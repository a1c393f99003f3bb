"""Prometheus alert rules for connection pressure, generated from the metric contract.

One alert per cause: when one cause explains another alert (a full server explains "near the
limit" and "one application holds most slots"; a holder idle in transaction that blocks others
explains its own idle-in-transaction and lock-wait alerts), the other alert's expression says
``unless`` that cause, so the page carries one alert per cause without Alertmanager inhibitions.
The alerts themselves are small factories in ``agent/alerts/``, one module per family.

The committed ``alerts/pgconn-agent.rules.yml`` is ``render_rules({})``, written by
``scripts/generate.py`` with the tables of ``alerts/README.md`` (``alerts_markdown``,
``thresholds_markdown``). Public surface:

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

import re
from collections.abc import Mapping
from typing import Any

from . import spec
from .alerts import agent_health, connections, pgbouncer, transactions
from .alerts.dialect import helm, plain
from .alerts.rule import Alert
from .alerts.settings import (
    DEFAULT_SETTINGS,
    DEFAULTS,
    ORDERED_PAIRS,
    RUNBOOK_BASE,
    THRESHOLDS,
    Settings,
    changed,
    duration,
    helm_settings,
    helm_settings_schema,
    number,
    parse_sets,
    validate_overrides,
)
from .alerts.yaml_text import dump

__all__ = [
    "ALERTS",
    "ALERT_NAMES",
    "DEFAULTS",
    "FIRES",
    "HELM_VALUES_PATH",
    "ORDERED_PAIRS",
    "RULE_FILE",
    "RUNBOOK_BASE",
    "THRESHOLDS",
    "Alert",
    "Settings",
    "alerts_markdown",
    "duration",
    "helm_settings",
    "helm_settings_schema",
    "helm_values",
    "parse_sets",
    "render_rules",
    "render_rules_helm",
    "rule_groups",
    "thresholds_markdown",
    "validate_overrides",
]

RULE_FILE = "alerts/pgconn-agent.rules.yml"
HELM_VALUES_PATH = ".Values.alerts"

ALERTS: tuple[Alert, ...] = (*connections.alerts(), *transactions.alerts(),
                             *agent_health.alerts(), *pgbouncer.alerts())
ALERT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(a.name for a in ALERTS))

FIRES: dict[str, str] = {
    "PostgreSQLConnectionsNearLimit":
        "client backends > [[near_limit_ratio]] (and <= [[exhausted_ratio]]) of usable slots "
        "for [[near_limit_for_seconds]], no single application holding most",
    "PostgreSQLConnectionsExhausted":
        "client backends > [[exhausted_ratio]] of usable slots for [[exhausted_for_seconds]]; "
        "names the largest holder and its idle count",
    "PostgreSQLApplicationHoldsMostSlots":
        "one application_name holds > [[app_share_ratio]] of usable slots while the server is "
        "> [[holder_filling_ratio]] (not exhausted) full (says how many are idle)",
    "PostgreSQLApplicationHostHoldsMostSlots":
        "the same for one application_name on one client_addr (> [[app_host_share_ratio]]), "
        "when the application also has other hosts",
    "PostgreSQLIdleConnectionHoarding":
        "one application_name on one host keeps >= [[idle_hoarding_connections]] connections "
        "idle, the oldest > [[idle_hoarding_age_seconds]], for [[idle_hoarding_for_seconds]] "
        "(not while exhausted or while its application holds most slots)",
    "PostgreSQLConnectionChurn":
        "one application_name on one host opens > [[churn_per_second]] connections/s for "
        "[[churn_for_seconds]]",
    "PostgreSQLConnectionLimitNearlyReached":
        "a role's or database's connections > [[connection_limit_ratio]] of its CONNECTION "
        "LIMIT",
    "PostgreSQLIdleInTransaction":
        "a holder's sessions idle in transaction > [[idle_in_transaction_warning_seconds]] / "
        "> [[idle_in_transaction_critical_seconds]] (critical replaces warning; quiet when the "
        "holder blocks others)",
    "PostgreSQLLongTransaction":
        "a (non-idle) transaction open > [[long_transaction_seconds]]",
    "PostgreSQLLockWaitsPilingUp":
        ">= [[lock_waiting_sessions]] sessions of one application wait for locks, for "
        "[[lock_waiting_for_seconds]] (names the root blockers; quiet when an "
        "idle-in-transaction root blocks in that database)",
    "PostgreSQLBlockedByIdleInTransaction":
        ">= [[blocked_by_idle_in_transaction_sessions]] sessions queue behind a holder's root "
        "blocker that is idle in transaction, for "
        "[[blocked_by_idle_in_transaction_for_seconds]]; carries the root pid and "
        "`SELECT pg_terminate_backend(pid)`",
    "PgconnAgentTargetDown":
        "the agent cannot poll a target (not stalled) for [[agent_down_for_seconds]]",
    "PgconnAgentPollsStalled":
        "a target's polls time out on the client side (up 0) or overrun into the next one",
    "PgconnAgentPollsFailing": "polls of an up target fail repeatedly",
    "PgconnAgentGroupsFolded": "the cardinality cap folds holder groups",
    "PgconnAgentSessionsHidden":
        "the agent's role cannot see some sessions (grant pg_monitor)",
    "PgconnAgentAbsent":
        "an agent (job, instance) that reported in the last hour no longer does, or none "
        "reports",
    "PgBouncerClientsWaiting":
        "clients of a PgBouncer pool wait > [[pgbouncer_wait_seconds]] for a server "
        "connection, for [[pgbouncer_wait_for_seconds]]",
    "PgBouncerClientLimitNear":
        "PgBouncer's client connections > [[pgbouncer_client_limit_ratio]] of max_client_conn",
}
"""When each alert fires, in words; ``[[name]]`` is a threshold, said with its default
(``alerts_markdown``, the table in ``alerts/README.md``)."""


def rule_groups(overrides: Mapping[str, float] | None = None,
                settings: Settings = DEFAULT_SETTINGS) -> list[dict[str, Any]]:
    """The rule groups as data (the ``groups:`` list of a Prometheus rule file)."""
    return plain(validate_overrides(overrides or {}), settings).groups(ALERTS)


def render_rules(overrides: Mapping[str, float] | None = None,
                 settings: Settings = DEFAULT_SETTINGS) -> str:
    """The Prometheus rule file (YAML text), thresholds from ``DEFAULTS`` updated by ``overrides``.

    ``overrides`` maps names of ``THRESHOLDS`` to numbers (``*_for_seconds`` in seconds);
    unknown names raise ``ConfigError``. ``render_rules({})`` is the committed rule file.
    """
    values = validate_overrides(overrides or {})
    head = ["# Generated by agent/alert_rules.py; do not edit by hand.",
            "# Change thresholds with: pgconn-agent rules --set NAME=VALUE ... > FILE"]
    if overridden := changed(values, settings):
        head.append("# Overridden: " + ", ".join(overridden))
    return "\n".join(head) + "\n" + dump({"groups": plain(values, settings).groups(ALERTS)})


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
    text = dump({"groups": helm(values_path).groups(ALERTS)}, width=1 << 20)
    pad = " " * indent
    return "".join(pad + line if line.strip() else line
                   for line in text.splitlines(keepends=True))


def helm_values() -> dict[str, float | int]:
    """Defaults for ``.Values.alerts.thresholds`` (whole numbers as ints)."""
    return {t.name: int(t.default) if t.default == int(t.default) else t.default
            for t in THRESHOLDS}


def alerts_markdown() -> str:
    """The alerts as a Markdown table: name, severities and when it fires (defaults filled in)."""
    rows = ["| alert | severity | fires when |", "|---|---|---|"]
    for name in ALERT_NAMES:
        severity = " / ".join(dict.fromkeys(a.severity for a in ALERTS if a.name == name))
        fires = re.sub(r"\[\[(\w+)\]\]", lambda m: spec.ALERTS[m.group(1)].said,
                       FIRES[name])
        rows.append(f"| {name} | {severity} | {fires} |")
    return "\n".join(rows) + "\n"


def thresholds_markdown() -> str:
    """The thresholds as a Markdown table (kept in ``alerts/README.md``)."""
    rows = ["| name | default | unit | meaning |", "|---|---|---|---|"]
    for t in THRESHOLDS:
        default = number(t.default)
        if t.is_duration:
            default += f" ({duration(t.default)})"
        rows.append(f"| `{t.name}` | {default} | {t.unit} | {t.description} |")
    return "\n".join(rows) + "\n"
