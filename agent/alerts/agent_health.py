"""Alerts on the agent itself: a target it cannot poll, stalled or failing polls, what the
cardinality cap or missing privileges hide, and an agent that stopped reporting."""

from __future__ import annotations

from .. import contract as c
from .annotations import listing
from .promql import unless
from .rule import Alert

GROUP = "pgconn-agent.agent"

_DOWN = "max by (<T>) (@up@) == 0"
_STALLED = ("(\n  max by (<T>) (@up@) == 0\n  and on (<T>)\n"
            "  sum by (<T>) (increase(@errors@{error=\"timeout\"}[10m])) > 0\n)\n"
            "or on (<T>)\n(sum by (<T>) (increase(@skipped@[5m])) > 0)")
_RECENT_ERRORS = listing("sum by (error) (increase(@errors@{target=%q}[10m])) > 0",
                         ("$labels.target",), "{{ $s.Labels.error }}", "error", " none counted")


def target_down() -> Alert:
    """Polls fail outright; a stall (timeouts, skipped polls) pages as PollsStalled."""
    return Alert(
        "PgconnAgentTargetDown", GROUP, "critical", unless(_DOWN, "<T>", _STALLED),
        "agent_down_for_seconds",
        "pgconn-agent cannot poll PostgreSQL target {{ $labels.target }}",
        "pgconn-agent's polls of {{ $labels.target }} fail (recent errors:"
        + _RECENT_ERRORS + "), so its connection pressure is not visible. "
        "too_many_connections means the server is full: that is the incident itself.",
    )


def polls_stalled() -> Alert:
    return Alert(
        "PgconnAgentPollsStalled", GROUP, "critical", _STALLED,
        "polls_stalled_for_seconds",
        "pgconn-agent: polls of {{ $labels.target }} stall",
        "pgconn-agent's polls of {{ $labels.target }} do not finish: they time out on the "
        "client side or are still running when the next one is due (recent errors:"
        + _RECENT_ERRORS + "). The server accepts the connection but does not answer: "
        "a hung or overloaded server, a stopped backend, or a network path that drops "
        "packets. Its connection pressure is not visible meanwhile.",
    )


def polls_failing() -> Alert:
    """Some polls fail while others succeed (all failing is TargetDown)."""
    return Alert(
        "PgconnAgentPollsFailing", GROUP, "warning",
        unless("sum by (<T>, error) (increase(@errors@[10m]))\n"
               ">= [[poll_errors_per_10m]]", "<T>", _DOWN),
        "poll_errors_for_seconds",
        "pgconn-agent: polls of {{ $labels.target }} fail with {{ $labels.error }}",
        "{{ $value | humanize }} polls of {{ $labels.target }} failed with "
        "{{ $labels.error }} in the last 10 minutes while others succeed; the metrics of "
        "{{ $labels.target }} have gaps.",
    )


def _gauge_above_zero(name: str, metric: str, for_: str, summary: str, description: str
                      ) -> Alert:
    """A warning while one of the agent's per-target gauges is above zero."""
    return Alert(name, GROUP, "warning", f"max by (<T>) (@{metric}@) > 0", for_,
                 summary, description)


def groups_folded() -> Alert:
    return _gauge_above_zero(
        "PgconnAgentGroupsFolded", "folded", "groups_folded_for_seconds",
        "pgconn-agent: {{ $value | humanize }} groups of {{ $labels.target }} are folded "
        "by the cardinality cap",
        "{{ $value | humanize }} holder groups of {{ $labels.target }} exceed the agent's "
        "cardinality cap and are reported as one overflow group, so their application, "
        "host and user are not visible. Raise the cap or drop a dimension (often "
        "client_addr) in the agent's configuration.")


def sessions_hidden() -> Alert:
    return _gauge_above_zero(
        "PgconnAgentSessionsHidden", "hidden", "sessions_hidden_for_seconds",
        "pgconn-agent cannot see {{ $value | humanize }} sessions of {{ $labels.target }}",
        "The agent's role on {{ $labels.target }} cannot see the state, client address "
        "or query of {{ $value | humanize }} client sessions, so they are counted as "
        "(hidden) and cannot be attributed. Grant the role pg_monitor.")


def absent() -> Alert:
    """Per scraped agent: absent() alone stays silent while any other agent reports."""
    return Alert(
        "PgconnAgentAbsent", GROUP, "critical",
        "(\n  group by (<J>) (present_over_time(@up@[1h]))\n"
        "  unless\n  group by (<J>) (@up@)\n)\nor\nabsent(@up@)",
        "agent_absent_for_seconds",
        "pgconn-agent metrics are absent{{ with $labels.instance }} from {{ . }}{{ end }}",
        "{{ with $labels.instance }}The agent at {{ . }} (job {{ $labels.job }}) reported "
        "within the last hour and no longer does{{ else }}No pgconn-agent reports "
        + c.AGENT_UP.prometheus_name + "{{ end }}: the agent is not running, or "
        "Prometheus does not scrape it. Connection pressure on the PostgreSQL servers it "
        "watches goes unnoticed.",
    )


def alerts() -> tuple[Alert, ...]:
    return (target_down(), polls_stalled(), polls_failing(), groups_folded(), sessions_hidden(),
            absent())
