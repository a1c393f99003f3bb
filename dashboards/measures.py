"""What the overview and the drill-down both draw: one measure each, the ``by`` labels theirs."""

from __future__ import annotations

from grafana_foundation_sdk.builders import table

from agent import contract as c
from dashboards import thresholds as t
from dashboards.links import Alert, application_cell_link, runbook
from dashboards.panels import Measure, instant_table
from dashboards.promql import IDLE, IDLE_IN_TX, sel

HOLDER_GROUP = ("target", "application_name", "client_addr", "usename", "datname", "state")
"""A holder group's labels, as the agent groups client backends by default: one table row."""


BLOCKERS = (Alert.BLOCKED_BY_IDLE, Alert.LOCK_WAITS)
"""What the blocking panels confirm: a root idle in transaction, or waits piling up."""

CONNECTIONS = Measure(c.CONNECTION_COUNT, "sum", "none")
IDLE_COUNT = Measure(c.CONNECTION_COUNT, "sum", "none", (IDLE,),
                     runbooks=(Alert.HOARDING,))
IDLE_IN_TX_COUNT = Measure(c.CONNECTION_COUNT, "sum", "none", (IDLE_IN_TX,),
                           runbooks=(Alert.IDLE_IN_TRANSACTION,))
IDLE_AGE = Measure(c.STATE_AGE_MAX, "max", "s", (IDLE,), stacked=False,
                   runbooks=(Alert.HOARDING,))
IDLE_IN_TX_AGE = Measure(c.STATE_AGE_MAX, "max", "s", (IDLE_IN_TX,), stacked=False,
                         thresholds=t.IDLE_IN_TX.steps(),
                         runbooks=(Alert.IDLE_IN_TRANSACTION,))
XACT_AGE = Measure(c.TRANSACTION_AGE_MAX, "max", "s", stacked=False,
                   thresholds=t.XACT_AGE.steps(), runbooks=(Alert.LONG_TRANSACTION,))
WAITING = Measure(c.CONNECTION_WAITING, "sum", "none")
LOCK_WAITERS = Measure(c.LOCK_WAITING, "sum", "none", runbooks=(Alert.LOCK_WAITS,))
LOCK_WAIT_AGE = Measure(c.LOCK_WAIT_TIME_MAX, "max", "s", stacked=False,
                        thresholds=t.LOCK_WAIT.steps(), runbooks=(Alert.LOCK_WAITS,))
ROOT_BLOCKING = Measure(c.LOCK_ROOT_BLOCKING, "sum", "none", runbooks=BLOCKERS)
DIRECT_BLOCKING = Measure(c.LOCK_BLOCKING, "sum", "none", runbooks=BLOCKERS)
OPENED = Measure(c.CONNECTION_OPENED, "sum", "cps", stacked=False, rate=True,
                 runbooks=(Alert.CHURN,))

ROOT_NOTE = (" A root blocker holds the lock without waiting for one itself: end it and the "
             "whole queue moves. 'idle in transaction' there is a client that left a "
             "transaction open.")


def root_blockers_table(*matchers: str, w: int, h: int) -> table.Panel:
    """The root blockers the agent names by pid, with the statement that ends each."""
    columns = ("target", "pid", "application_name", "client_addr", "usename", "datname",
               "state")
    return (instant_table(
        "Root blockers (pid)",
        "The root blockers now (at most 5, most sessions queued first), by pid: holding a "
        "lock others queue behind, directly or behind other waiters, without waiting "
        "themselves. End one with SELECT pg_terminate_backend(pid) (its transaction rolls "
        "back); intermediates in the queue are not listed.",
        columns, [("A", f"max by ({', '.join(columns)}) "
                        f"({sel(c.LOCK_ROOT_BLOCKER, *matchers)})", "Queued behind it")],
        sort="Queued behind it", w=w, h=h)
        .links(runbook(Alert.BLOCKED_BY_IDLE))
        .override_by_name("Application", application_cell_link()))
