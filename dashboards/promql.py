"""PromQL from the contract: every selector scoped to the dashboards' variables.

Metric names come from :mod:`agent.contract` only, attribute values from :mod:`agent.spec`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent import contract as c
from agent import spec

SCOPE = ('job=~"$job"', 'cluster=~"$cluster"', 'target=~"$target"')
IDLE = f'state="{spec.State.IDLE}"'
IDLE_IN_TX = f'state=~"{spec.IDLE_IN_TRANSACTION_REGEX}"'
APPS = 'application_name=~"$application_name"'
"""The overview's application filter (a multi-value variable)."""
THE_APP = 'application_name="$application_name"'
"""The drill-down's one application."""

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def sel(metric: c.MetricSpec, *matchers: str, suffix: str = "") -> str:
    """A selector of a contract metric, always scoped to ``$job``, ``$cluster``, ``$target``.

    ``suffix`` is only for a histogram's ``_bucket``/``_sum``/``_count`` series.
    """
    histogram = metric.instrument is c.Instrument.HISTOGRAM
    if suffix and (not histogram or suffix not in HISTOGRAM_SUFFIXES):
        raise ValueError(f"suffix {suffix!r} on {metric.name} ({metric.instrument.value})")
    return f"{metric.prometheus_name}{suffix}{{{', '.join((*SCOPE, *matchers))}}}"


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
# Role and database limits, with a "none set" row where a target has none


NONE_SET = -1
"""The limit a row of a scope without any limit shows (PostgreSQL's own "no limit" value)."""
_SCOPES = ((spec.LimitScope.ROLE, "usename"), (spec.LimitScope.DATABASE, "datname"))


def _none_set(value: str, scope: str) -> str:
    """``value`` per target labelled as the "none set" row of ``scope``."""
    return (f'label_replace(label_replace({value}, "scope", "{scope}", "", ""), '
            f'"name", "none set", "", "")')


def limits() -> str:
    """Each limit, and a "none set" row (value -1) per target and scope without one."""
    expr = f"max by (target, scope, name) ({sel(c.CONNECTION_LIMIT)})"
    for scope, _ in _SCOPES:
        expr += (f" or on (target, scope) "
                 f"{_none_set(f'(0 * max by (target) ({sel(c.AGENT_UP)}) + {NONE_SET})', scope)}")
    return expr


def limit_usage() -> str:
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
