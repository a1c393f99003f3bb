"""Transaction alerts: idle in transaction, long transactions, lock waits, and the root blocker
idle in transaction.

A holder idle in transaction that blocks others explains its own idle-in-transaction and the
lock-wait alerts, so those step aside (``unless``) for PostgreSQLBlockedByIdleInTransaction.
"""

from __future__ import annotations

from . import promql
from .annotations import IN_IIT, ON_POSTGRES, listing, scalar
from .rule import Alert

GROUP = "pgconn-agent.transactions"

_H = "<T>, datname, usename, application_name, client_addr"
"""A session holder: the labels of the per-holder gauges."""
_HOLDER_ARGS = ("$labels.target", "$labels.datname", "$labels.usename",
                "$labels.application_name", "$labels.client_addr")
_HOLDER_SEL = "target=%q,datname=%q,usename=%q,application_name=%q,client_addr=%q"
_SESSION_HOLDER = ("application_name {{ $labels.application_name }} (user {{ $labels.usename }},"
                   " database {{ $labels.datname }}, client {{ $labels.client_addr }})")
_IIT_SESSIONS = scalar(f"sum(@count@{{{_HOLDER_SEL},{IN_IIT}}})", *_HOLDER_ARGS)


def _idle_roots(by: str) -> str:
    """Root blockers idle in transaction with enough sessions queued behind them."""
    return (f"sum by ({by}) (@root_blocking@{{{promql.IN_IIT}}})\n"
            ">= [[blocked_by_idle_in_transaction_sessions]]")


_IIT_ROOTS = _idle_roots(_H)
_ROOT_PIDS = listing(
    f"sort_desc(@root_blocker@{{{_HOLDER_SEL},{IN_IIT}}})", _HOLDER_ARGS,
    "pid {{ $s.Labels.pid }} ({{ $s.Value | humanize }} queued behind it): "
    "SELECT pg_terminate_backend({{ $s.Labels.pid }})", "pid",
    " not among the root blockers the agent names; run pgconn-agent diagnose")


def idle_in_transaction(severity: str, above: str, below: str | None) -> Alert:
    """Warning and critical are one alert: the critical one replaces the warning (``<=``)."""
    age = f"max by ({_H}) (@state_age@{{{promql.IN_IIT}}})\n> [[{above}]]"
    if below is not None:
        age += f" <= [[{below}]]"
    return Alert(
        "PostgreSQLIdleInTransaction", GROUP, severity,
        # A holder whose idle transaction blocks others pages as BlockedByIdleInTransaction.
        promql.unless(age, _H, _IIT_ROOTS), "idle_in_transaction_for_seconds",
        ON_POSTGRES + "application_name {{ $labels.application_name }} "
        "has sessions idle in transaction for {{ $value | humanizeDuration }}",
        _IIT_SESSIONS + " sessions of " + _SESSION_HOLDER + " on {{ $labels.target }} are idle "
        "in transaction, the oldest for {{ $value | humanizeDuration }}. Each holds its "
        "connection, its locks and the vacuum horizon while doing nothing: a transaction left "
        "open across an await, a network call or an error path.",
    )


def long_transaction() -> Alert:
    return Alert(
        "PostgreSQLLongTransaction", GROUP, "warning",
        f"max by ({_H}) (@xact_age@{{state!~\"{promql.IIT}\"}})\n> [[long_transaction_seconds]]",
        "long_transaction_for_seconds",
        ON_POSTGRES + "a transaction of application_name "
        "{{ $labels.application_name }} has been open for {{ $value | humanizeDuration }}",
        "A session of " + _SESSION_HOLDER + " on {{ $labels.target }} has had a "
        "transaction open for {{ $value | humanizeDuration }}. It holds its locks and the "
        "vacuum horizon for that long, and its connection stays taken.",
    )


def lock_waits_piling_up() -> Alert:
    """Waits behind a root idle in transaction page as BlockedByIdleInTransaction."""
    return Alert(
        "PostgreSQLLockWaitsPilingUp", GROUP, "warning",
        promql.unless("sum by (<T>, datname, application_name) (@lock_waiting@)\n"
               ">= [[lock_waiting_sessions]]", "<T>, datname", _idle_roots("<T>, datname")),
        "lock_waiting_for_seconds",
        ON_POSTGRES + "{{ $value | humanize }} sessions of "
        "application_name {{ $labels.application_name }} are waiting for locks",
        "{{ $value | humanize }} sessions of application_name "
        "{{ $labels.application_name }} in database {{ $labels.datname }} on "
        "{{ $labels.target }} are waiting for heavyweight locks, the longest for "
        + scalar("max(@lock_wait_time@{target=%q,datname=%q,application_name=%q})",
                 "$labels.target", "$labels.datname", "$labels.application_name",
                 fn="humanizeDuration", default="?")
        + ". Each waiter keeps its connection. Root blockers (holding the lock, waiting "
        "for nothing):"
        + listing("topk(3, sum by (application_name, client_addr, state) "
                  "(@root_blocking@{target=%q,datname=%q}))",
                  ("$labels.target", "$labels.datname"),
                  "application_name {{ $s.Labels.application_name }} from "
                  "{{ $s.Labels.client_addr }} ({{ $s.Labels.state }}) with "
                  "{{ $s.Value | humanize }} queued", "state", " none visible")
        + ". Fix the root: the sessions between it and the waiters only pass the wait on.",
    )


def blocked_by_idle_in_transaction() -> Alert:
    """The page that carries the root blocker's pid and the ready pg_terminate_backend."""
    return Alert(
        "PostgreSQLBlockedByIdleInTransaction", GROUP, "critical", _IIT_ROOTS,
        "blocked_by_idle_in_transaction_for_seconds",
        ON_POSTGRES + "an idle transaction of application_name "
        "{{ $labels.application_name }} blocks {{ $value | humanize }} sessions",
        "Sessions of " + _SESSION_HOLDER + " on {{ $labels.target }} are idle in "
        "transaction and hold locks {{ $value | humanize }} sessions queue behind ("
        + scalar("sum(@lock_waiting@{target=%q,datname=%q})", "$labels.target",
                 "$labels.datname")
        + " waiting for locks in database {{ $labels.datname }} in all); "
        + _IIT_SESSIONS + " of its sessions are idle in transaction, the oldest for "
        + scalar(f"max(@state_age@{{{_HOLDER_SEL},{IN_IIT}}})", *_HOLDER_ARGS,
                 fn="humanizeDuration", default="?")
        + ". Root blocker:" + _ROOT_PIDS + ". The blocker does nothing and will not "
        "release the locks until its client commits, rolls back or disconnects; lock or "
        "transaction timeouts in the waiters do not help. Terminating it rolls its "
        "transaction back.",
    )


def alerts() -> tuple[Alert, ...]:
    return (
        idle_in_transaction("warning", "idle_in_transaction_warning_seconds",
                            "idle_in_transaction_critical_seconds"),
        idle_in_transaction("critical", "idle_in_transaction_critical_seconds", None),
        long_transaction(), lock_waits_piling_up(), blocked_by_idle_in_transaction(),
    )
