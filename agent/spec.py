"""The spec: every public number and name besides the metrics, declared once.

Metrics live in ``agent.contract`` (which reads its attribute values from here). This module
declares the rest of the public surface:

- ``DIAGNOSE_THRESHOLDS``: the ``[thresholds]`` config keys where findings start, each a
  constant (``IDLE_HOARD_AGE``) that diagnose reads as ``t[spec.IDLE_HOARD_AGE]``. One
  ``_diagnose(...)`` line adds a key: ``config.Thresholds``, its checks, ``check-config``,
  ``docs/thresholds.md`` and the Helm schema follow from it.
- ``ALERT_THRESHOLDS``: the alert rules' tunables (``pgconn-agent rules --set``, Helm's
  ``alerts.thresholds``).
- ``PANEL_THRESHOLDS``: colour steps of dashboard panels with no diagnose or alert twin.
- ``TWINS``: a diagnose threshold and the alert threshold for the same condition. Their
  defaults agree unless a reason is declared (a diagnosis sees one instant, an alert a
  sustained condition); a test checks both ways, so a stale reason fails too.
- Attribute values as enums (``State``, ``PollError``, ``SessionOutcome``, ``LimitScope``).
- ``FINDINGS``: every finding code ``diagnose`` may report, with its meaning (the README's
  findings table is checked against it; a Finding with another code is refused).

Names here are public: add, never rename.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class Use(Enum):
    """Where a threshold is read."""

    DIAGNOSE = "diagnose"
    ALERTS = "alerts"
    DASHBOARDS = "dashboards"


@dataclass(frozen=True, slots=True)
class Threshold:
    """One tunable number. Alert names ending in ``_for_seconds`` are ``for:`` durations."""

    name: str
    default: float
    unit: str
    description: str
    used_in: frozenset[Use] = frozenset()

    @property
    def is_duration(self) -> bool:
        return self.name.endswith("_for_seconds")

    @property
    def is_ratio(self) -> bool:
        return self.unit == "ratio"

    @property
    def said(self) -> str:
        """The default as a person says it: "80 %", "5 minutes", "1 s", "20"."""
        if self.is_ratio:
            return f"{self.default * 100:g} %"
        if self.unit == "seconds" and self.default >= 120:
            return f"{self.default / 60:g} minutes"
        if self.unit == "seconds":
            return "1 minute" if self.default == 60 else f"{self.default:g} s"
        return f"{self.default:g}"

    @property
    def is_count(self) -> bool:
        """Whole numbers (config reads them as integers >= 1)."""
        return self.unit == "connections" and isinstance(self.default, int)


A, P = Use.ALERTS, Use.DASHBOARDS


def _t(name: str, default: float, unit: str, description: str, *uses: Use) -> Threshold:
    return Threshold(name, default, unit, description, frozenset(uses))


_DIAGNOSE: list[Threshold] = []


def _diagnose(name: str, default: float, unit: str, description: str, *uses: Use
              ) -> Threshold:
    """A ``[thresholds]`` key. Declaring it is all the config (parsing, checks, effective
    config), the docs and the Helm schema need; the diagnose rule reads it as
    ``t[spec.NAME]``."""
    threshold = _t(name, default, unit, description, Use.DIAGNOSE, *uses)
    _DIAGNOSE.append(threshold)
    return threshold


UTILIZATION_WARNING = _diagnose(
    "utilization_warning", 0.8, "ratio",
    "Client backends / usable slots from which slots_high (and pgbouncer_client_limit, of "
    "max_client_conn) is reported.", P)
UTILIZATION_CRITICAL = _diagnose(
    "utilization_critical", 0.95, "ratio",
    "Client backends / usable slots from which slots_exhausted is reported.", P)
HOLDER_SHARE = _diagnose(
    "holder_share", 0.5, "ratio",
    "Share of usable slots one application (and host) must hold for dominant_application.", P)
IDLE_HOARD_COUNT = _diagnose(
    "idle_hoard_count", 10, "connections",
    "Idle connections of one holder for idle_hoarding (and the size from which pool_saturated "
    "looks at a holder).")
IDLE_HOARD_AGE = _diagnose(
    "idle_hoard_age", 60.0, "seconds",
    "How long the oldest of those idle connections must have been idle.")
IDLE_IN_TRANSACTION_WARNING = _diagnose(
    "idle_in_transaction_warning", 60.0, "seconds",
    "Age in state 'idle in transaction' from which idle_in_transaction is reported.", P)
IDLE_IN_TRANSACTION_CRITICAL = _diagnose(
    "idle_in_transaction_critical", 300.0, "seconds",
    "Age from which idle_in_transaction is critical.", P)
LONG_TRANSACTION = _diagnose(
    "long_transaction", 300.0, "seconds",
    "Age of an open transaction (sessions not idle in transaction) from which long_transaction "
    "is reported.", P)
CHURN_YOUNG = _diagnose(
    "churn_young", 20, "connections",
    "Backends younger than a minute from one holder that stayed open: connection_burst (info).")
CHURN_RATE = _diagnose(
    "churn_rate", 1.0, "connections per second",
    "New sessions per second that close again, sustained over the window, from one holder (or a "
    "database) for connection_churn; the daemon's catch bursts start from this database rate.")
LIMIT_SHARE = _diagnose(
    "limit_share", 0.9, "ratio",
    "Share of a role's or database's connection limit for connection_limit.")
POOL_WAIT_CRITICAL = _diagnose(
    "pool_wait_critical", 5.0, "seconds",
    "Longest wait of a PgBouncer pool's client from which pgbouncer_pool_waiting is critical "
    "(warning from the first waiting client).", P)
POOL_QUERY_SLOWDOWN = _diagnose(
    "pool_query_slowdown", 2.0, "times",
    "A query's time on the server between diagnose's two polls of a waiting PgBouncer "
    "(SHOW STATS, the clients' wait taken out), divided by the same since PgBouncer started, "
    "from which pgbouncer_pool_waiting says the server got slow (a bigger pool would not "
    "help).")
POOL_IDLE_IN_TRANSACTION = _diagnose(
    "pool_idle_in_transaction", 0.5, "ratio",
    "Share of a waiting pool's transaction time (SHOW STATS between diagnose's two polls, "
    "the clients' wait taken out) not spent running a query, from which "
    "pgbouncer_pool_waiting says the holders keep server connections idle inside "
    "transactions.")

DIAGNOSE_THRESHOLDS: tuple[Threshold, ...] = tuple(_DIAGNOSE)

ALERT_THRESHOLDS: tuple[Threshold, ...] = (
    _t("near_limit_ratio", 0.8, "ratio",
       "Client backends / usable slots above which PostgreSQLConnectionsNearLimit fires.", A),
    _t("near_limit_for_seconds", 300, "seconds",
       "`for` duration of PostgreSQLConnectionsNearLimit.", A),
    _t("exhausted_ratio", 0.95, "ratio",
       "Client backends / usable slots above which PostgreSQLConnectionsExhausted fires (and "
       "replaces the near-limit and holder alerts of the target).", A),
    _t("exhausted_for_seconds", 60, "seconds",
       "`for` duration of PostgreSQLConnectionsExhausted.", A),
    _t("app_share_ratio", 0.5, "ratio",
       "Share of usable slots one application_name must hold for "
       "PostgreSQLApplicationHoldsMostSlots.", A),
    _t("app_host_share_ratio", 0.5, "ratio",
       "Share of usable slots one application_name on one client_addr must hold for "
       "PostgreSQLApplicationHostHoldsMostSlots (only when the application also has other "
       "hosts).", A),
    _t("holder_filling_ratio", 0.8, "ratio",
       "Utilization the server must also be above for the two 'holds most slots' alerts.", A),
    _t("holder_for_seconds", 120, "seconds",
       "`for` duration of the two 'holds most slots' alerts.", A),
    _t("idle_hoarding_connections", 20, "connections",
       "Idle connections one application_name on one client_addr must hold for "
       "PostgreSQLIdleConnectionHoarding.", A),
    _t("idle_hoarding_age_seconds", 300, "seconds",
       "How long the oldest of those connections must have been idle.", A),
    _t("idle_hoarding_for_seconds", 600, "seconds",
       "`for` duration of PostgreSQLIdleConnectionHoarding.", A),
    _t("idle_in_transaction_warning_seconds", 60, "seconds",
       "Oldest idle-in-transaction age for PostgreSQLIdleInTransaction (warning).", A),
    _t("idle_in_transaction_critical_seconds", 300, "seconds",
       "Oldest idle-in-transaction age for PostgreSQLIdleInTransaction (critical, replaces "
       "the warning).", A),
    _t("idle_in_transaction_for_seconds", 0, "seconds",
       "`for` duration of PostgreSQLIdleInTransaction (the age already is a duration).", A),
    _t("long_transaction_seconds", 1800, "seconds",
       "Oldest transaction age (sessions not idle in transaction) for "
       "PostgreSQLLongTransaction.", A, P),
    _t("long_transaction_for_seconds", 0, "seconds",
       "`for` duration of PostgreSQLLongTransaction.", A),
    _t("lock_waiting_sessions", 5, "connections",
       "Sessions of one application_name in one database waiting for heavyweight locks, for "
       "PostgreSQLLockWaitsPilingUp.", A),
    _t("lock_waiting_for_seconds", 120, "seconds",
       "`for` duration of PostgreSQLLockWaitsPilingUp.", A),
    _t("blocked_by_idle_in_transaction_sessions", 1, "connections",
       "Sessions queued behind one holder's root blockers that are idle in transaction, for "
       "PostgreSQLBlockedByIdleInTransaction.", A),
    _t("blocked_by_idle_in_transaction_for_seconds", 60, "seconds",
       "`for` duration of PostgreSQLBlockedByIdleInTransaction.", A),
    _t("churn_per_second", 5, "connections per second",
       "New connections per second from one application_name on one client_addr "
       "(rate over 5m), for PostgreSQLConnectionChurn.", A),
    _t("churn_for_seconds", 600, "seconds", "`for` duration of PostgreSQLConnectionChurn.", A),
    _t("connection_limit_ratio", 0.9, "ratio",
       "Connections / rolconnlimit (or datconnlimit) for PostgreSQLConnectionLimitNearlyReached.",
       A),
    _t("connection_limit_for_seconds", 300, "seconds",
       "`for` duration of PostgreSQLConnectionLimitNearlyReached.", A),
    _t("agent_down_for_seconds", 120, "seconds", "`for` duration of PgconnAgentTargetDown.", A),
    _t("polls_stalled_for_seconds", 60, "seconds",
       "`for` duration of PgconnAgentPollsStalled.", A),
    _t("poll_errors_per_10m", 3, "errors",
       "Failed polls of one kind in 10 minutes, for PgconnAgentPollsFailing.", A),
    _t("poll_errors_for_seconds", 300, "seconds",
       "`for` duration of PgconnAgentPollsFailing.", A),
    _t("groups_folded_for_seconds", 900, "seconds",
       "`for` duration of PgconnAgentGroupsFolded.", A),
    _t("sessions_hidden_for_seconds", 900, "seconds",
       "`for` duration of PgconnAgentSessionsHidden.", A),
    _t("agent_absent_for_seconds", 300, "seconds", "`for` duration of PgconnAgentAbsent.", A),
    _t("pgbouncer_wait_seconds", 1, "seconds",
       "Longest wait of a PgBouncer pool's client for a server connection above which "
       "PgBouncerClientsWaiting fires.", A, P),
    _t("pgbouncer_wait_for_seconds", 120, "seconds",
       "`for` duration of PgBouncerClientsWaiting.", A),
    _t("pgbouncer_client_limit_ratio", 0.8, "ratio",
       "PgBouncer client connections / max_client_conn for PgBouncerClientLimitNear.", A),
    _t("pgbouncer_client_limit_for_seconds", 300, "seconds",
       "`for` duration of PgBouncerClientLimitNear.", A),
)

PANEL_THRESHOLDS: tuple[Threshold, ...] = (
    _t("holder_share_red", 0.8, "ratio",
       "An application's share of usable slots turns red (orange from holder_share).", P),
    _t("idle_share_warning", 0.5, "ratio",
       "Share of an application's connections that are idle: orange.", P),
    _t("idle_share_critical", 0.8, "ratio",
       "Share of an application's connections that are idle: red.", P),
    _t("poll_duration_warning", 1.0, "seconds",
       "Poll duration panels turn orange: a poll this slow competes with the server's work.", P),
    _t("poll_duration_critical", 5.0, "seconds",
       "Poll duration panels turn red: near the agent's statement timeout.", P),
    _t("pool_saturation_warning", 0.8, "ratio",
       "A PgBouncer pool's server connections / its size: orange.", P),
    _t("pool_saturation_critical", 1.0, "ratio",
       "A PgBouncer pool's server connections / its size: red (new transactions queue).", P),
    _t("lock_wait_warning", 10.0, "seconds",
       "Lock-wait panels turn orange: a wait users notice.", P),
    _t("lock_wait_critical", 60.0, "seconds",
       "Lock-wait panels turn red: a request that has most likely timed out upstream.", P),
    _t("free_slots_warning", 10, "connections",
       "Free usable slots panels turn orange below this many: the next pool to grow fills "
       "the server.", P),
    _t("free_slots_critical", 3, "connections",
       "Free usable slots panels turn red below this many: new connections are about to be "
       "refused.", P),
)

ORDERED: tuple[tuple[str, str], ...] = (
    ("utilization_warning", "utilization_critical"),
    ("idle_in_transaction_warning", "idle_in_transaction_critical"),
    ("near_limit_ratio", "exhausted_ratio"),
    ("idle_in_transaction_warning_seconds", "idle_in_transaction_critical_seconds"),
    ("long_transaction", "long_transaction_seconds"),
    ("lock_wait_warning", "lock_wait_critical"),
    ("poll_duration_warning", "poll_duration_critical"),
    ("pool_saturation_warning", "pool_saturation_critical"),
    ("idle_share_warning", "idle_share_critical"),
    ("holder_share", "holder_share_red"),
    ("pgbouncer_wait_seconds", "pool_wait_critical"),
    ("free_slots_critical", "free_slots_warning"),
)
"""Pairs (warning, critical): the first must stay below the second (checked in the config
and in ``rules --set`` where both are in one table; tests check the defaults of the rest)."""


@dataclass(frozen=True, slots=True)
class Twin:
    """A diagnose threshold and an alert threshold for the same condition. ``differs``
    says why their defaults differ; without it they must be equal."""

    diagnose: str
    alert: str
    differs: str = ""


_INSTANT = "diagnose reports what one look shows; the alert pages only for a sustained case"
TWINS: tuple[Twin, ...] = (
    Twin("utilization_warning", "near_limit_ratio"),
    Twin("utilization_critical", "exhausted_ratio"),
    Twin("holder_share", "app_share_ratio"),
    Twin("holder_share", "app_host_share_ratio"),
    Twin("utilization_warning", "holder_filling_ratio"),
    Twin("utilization_warning", "pgbouncer_client_limit_ratio"),
    Twin("idle_in_transaction_warning", "idle_in_transaction_warning_seconds"),
    Twin("idle_in_transaction_critical", "idle_in_transaction_critical_seconds"),
    Twin("limit_share", "connection_limit_ratio"),
    Twin("idle_hoard_count", "idle_hoarding_connections",
         f"{_INSTANT}: a pool of 10 idle connections is worth a note, paging starts at 20"),
    Twin("idle_hoard_age", "idle_hoarding_age_seconds",
         f"{_INSTANT}: idle for a minute is visible in one look; the alert waits 5 minutes "
         "(and 10 more as its for: duration)"),
    Twin("long_transaction", "long_transaction_seconds",
         f"{_INSTANT}: a 5-minute transaction is worth naming in a diagnosis; a page at 30 "
         "minutes leaves batch jobs alone"),
    Twin("churn_rate", "churn_per_second",
         f"{_INSTANT}: diagnose measures a few seconds' window and names churn from 1 session/s; "
         "the alert rates new connections over 5 minutes and pages from 5/s"),
    Twin("pool_wait_critical", "pgbouncer_wait_seconds",
         "different severities: the alert warns from 1 s sustained for 2 minutes; diagnose "
         "warns from the first waiting client and is critical from 5 s"),
)


def by_name(table: tuple[Threshold, ...]) -> dict[str, Threshold]:
    return {t.name: t for t in table}


DIAGNOSE = by_name(DIAGNOSE_THRESHOLDS)
ALERTS = by_name(ALERT_THRESHOLDS)
PANELS = by_name(PANEL_THRESHOLDS)


# --- attribute values -------------------------------------------------------------------------

class State(StrEnum):
    """pg_stat_activity.state values the agent names, plus its own for unseen sessions."""

    ACTIVE = "active"
    IDLE = "idle"
    IDLE_IN_TRANSACTION = "idle in transaction"
    IDLE_IN_TRANSACTION_ABORTED = "idle in transaction (aborted)"
    FASTPATH = "fastpath function call"
    DISABLED = "disabled"
    STARTING = "starting"
    """A client backend still authenticating (no state yet): the agent's own value."""


IDLE_IN_TRANSACTION: tuple[str, ...] = (State.IDLE_IN_TRANSACTION,
                                        State.IDLE_IN_TRANSACTION_ABORTED)
IDLE_IN_TRANSACTION_REGEX = "idle in transaction.*"
"""PromQL regex matching both idle-in-transaction states."""


class PollError(StrEnum):
    """The ``error`` attribute of ``pgconn_agent.poll.errors``: why a poll failed."""

    CONNECT = "connect"
    AUTH = "auth"
    TIMEOUT = "timeout"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    QUERY = "query"


class SessionOutcome(StrEnum):
    """The ``outcome`` attribute of ``postgresql.sessions`` (pg_stat_database counters)."""

    ALL = "all"
    ABANDONED = "abandoned"
    FATAL = "fatal"
    KILLED = "killed"


class LimitScope(StrEnum):
    """The ``scope`` attribute of ``postgresql.connection.limit``."""

    ROLE = "role"
    DATABASE = "database"


class PoolerClientState(StrEnum):
    """The ``state`` of a PgBouncer client (``pgbouncer.pool.clients``)."""

    ACTIVE = "active"
    WAITING = "waiting"


class PoolerServerState(StrEnum):
    """The ``state`` of a PgBouncer server connection (``pgbouncer.pool.servers``)."""

    ACTIVE = "active"
    IDLE = "idle"
    USED = "used"
    TESTED = "tested"
    LOGIN = "login"


ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "error": tuple(PollError),
    "outcome": tuple(SessionOutcome),
    "scope": tuple(LimitScope),
    "state (pgbouncer.pool.clients)": tuple(PoolerClientState),
    "state (pgbouncer.pool.servers)": tuple(PoolerServerState),
}
"""Attributes whose values are a closed set (docs/metrics.md lists them)."""


# --- findings ---------------------------------------------------------------------------------

FINDINGS: dict[str, str] = {
    "slots_high": "client backends over utilization_warning of usable slots",
    "slots_exhausted": "client backends over utilization_critical of usable slots",
    "dominant_application": "one application holds most usable slots",
    "idle_hoarding": "one holder keeps many connections idle for long",
    "idle_in_transaction": "sessions idle in transaction for long",
    "long_transaction": "transactions open for long while their sessions work",
    "lock_chain": "a root blocker and everything queued behind it",
    "lock_chain_idle_root": "a root blocker idle in transaction and its queue",
    "pool_saturated": "every connection of a holder is busy",
    "connection_churn": "a holder opens sessions that close again at a sustained rate",
    "connection_burst": "a holder opened many connections in the last minute that stay open",
    "connection_limit": "a role's or database's connection limit nearly or fully reached",
    "no_idle_in_transaction_session_timeout": "nothing ends a forgotten transaction",
    "no_statement_timeout": "nothing ends a runaway statement",
    "no_application_name": "sessions without application_name",
    "insufficient_privilege": "the agent cannot see other roles' sessions",
    "target_unreachable": "the agent could not poll the target",
    "pgbouncer_pool_waiting": "a PgBouncer pool at its size with clients waiting",
    "pgbouncer_client_limit": "PgBouncer's clients near max_client_conn",
    "pgbouncer_idle_in_transaction_held": "a client holds a server connection idle in "
                                          "transaction through a transaction-mode pool",
    "pgbouncer_pools_exceed_slots": "pool sizes can open more connections than usable slots",
    "pgbouncer_server_filled_with_direct": "the server fills with PgBouncer's and direct "
                                           "clients' connections",
    "process_many_pools": "one local process holds more than its driver's default pool",
    "processes_multiply": "many local processes hold a few connections each",
    "single_process": "one local process holds a holder's connections",
    "client_processes_unreadable": "the agent may not read other users' processes",
}
