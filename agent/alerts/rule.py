"""One alert before rendering, and the tokens its texts carry for the dialects to expand.

Tokens (expanded by ``agent.alerts.dialect`` for the plain file and the Helm template):

- ``<T>``: target and the grouping labels, in expression label lists;
- ``<J>``: job, instance and the grouping labels (the agent's own absence);
- ``<GF>``: the grouping labels as printf matchers after ``target=%q`` in annotation lookups;
- ``<GA>``: the matching ``$labels.x`` printf arguments after ``$labels.target``;
- ``@m@{matchers}``: a contract metric (key of ``METRICS``); in expressions the selector joins
  its matchers;
- ``[[name]]``: a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import contract as c


@dataclass(frozen=True, slots=True)
class Alert:
    """An alerting rule; ``for_`` names its duration threshold."""

    name: str
    group: str
    severity: str
    expr: str
    for_: str
    summary: str
    description: str


METRICS: dict[str, str] = {
    "count": c.CONNECTION_COUNT.prometheus_name,
    "max": c.CONNECTION_MAX.prometheus_name,
    "reserved": c.CONNECTION_RESERVED.prometheus_name,
    "util": c.CONNECTION_UTILIZATION.prometheus_name,
    "state_age": c.STATE_AGE_MAX.prometheus_name,
    "xact_age": c.TRANSACTION_AGE_MAX.prometheus_name,
    "lock_waiting": c.LOCK_WAITING.prometheus_name,
    "lock_wait_time": c.LOCK_WAIT_TIME_MAX.prometheus_name,
    "root_blocking": c.LOCK_ROOT_BLOCKING.prometheus_name,
    "root_blocker": c.LOCK_ROOT_BLOCKER.prometheus_name,
    "limit": c.CONNECTION_LIMIT.prometheus_name,
    "opened": c.CONNECTION_OPENED.prometheus_name,
    "up": c.AGENT_UP.prometheus_name,
    "errors": c.POLL_ERRORS.prometheus_name,
    "skipped": c.POLL_SKIPPED.prometheus_name,
    "folded": c.GROUPS_FOLDED.prometheus_name,
    "hidden": c.SESSIONS_HIDDEN.prometheus_name,
    "pgb_clients": c.POOLER_CLIENTS.prometheus_name,
    "pgb_servers": c.POOLER_SERVERS.prometheus_name,
    "pgb_wait": c.POOLER_WAIT_MAX.prometheus_name,
    "pgb_size": c.POOLER_POOL_SIZE.prometheus_name,
    "pgb_client_count": c.POOLER_CLIENT_COUNT.prometheus_name,
    "pgb_client_max": c.POOLER_CLIENT_MAX.prometheus_name,
}
"""Metric names, from the contract only: the texts name them ``@key@``."""
