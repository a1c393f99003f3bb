"""Connection-slot alerts: the server filling up, who holds the slots, idle hoarding, churn
and role/database limits.

A full server explains "near the limit" and "one application holds most slots", so those
alerts step aside (``unless``) while it is exhausted.
"""

from __future__ import annotations

from .. import spec
from . import promql
from .annotations import IDLE, IN_IIT, ON_POSTGRES, first, largest_client, listing, query, scalar
from .rule import Alert

GROUP = "pgconn-agent.connections"

_APP_BY = "<T>, application_name"
_HOLDER_BY = "<T>, application_name, client_addr"
_APP_ARGS = ("$labels.target", "$labels.application_name")
_HOST_ARGS = (*_APP_ARGS, "$labels.client_addr")
_APP_SEL = "target=%q,application_name=%q"
_HOST_SEL = "target=%q,application_name=%q,client_addr=%q"

_UTIL_BY_T = "max by (<T>) (@util@)"
_EXHAUSTED = f"{_UTIL_BY_T} > [[exhausted_ratio]]"

# --- annotation fragments -----------------------------------------------------------------------

_USABLE = scalar("max(@max@{target=%q}) - max(@reserved@{target=%q})",
                 "$labels.target", "$labels.target", default="?")
_CLIENTS = scalar("sum(@count@{target=%q})", "$labels.target")
_UTIL = scalar("max(@util@{target=%q})", "$labels.target", fn="humanizePercentage",
               default="?")
_TOP_APP = query("topk(1, sum by (application_name) (@count@{target=%q}))", "$labels.target")
_LARGEST_HOLDER = first(
    _TOP_APP,
    "Largest holder: application_name {{ .Labels.application_name }} with "
    "{{ .Value | humanize }} connections, "
    + scalar(f"sum(@count@{{{_APP_SEL},{IDLE}}})", "$labels.target", ".Labels.application_name")
    + " of them idle.")
_HOLDER = ("application_name {{ $labels.application_name }} "
           "from {{ $labels.client_addr }}")
_NOT_MAX_CONNECTIONS = ("Raising max_connections only gives the holder more to hoard; "
                        "fix the client side.")


def _holding(by: str, share: str) -> str:
    """Holders (grouped ``by``) above ``share`` of the usable slots of a filling server."""
    usable = "max by (<T>) (@max@ - @reserved@)"
    return (f"(\n  sum by ({by}) (@count@)\n  > on (<T>) group_left ()\n"
            f"  ([[{share}]] * {usable})\n)\n"
            f"and on (<T>)\n({_UTIL_BY_T} > [[holder_filling_ratio]])")


_APP_HOLDS = _holding(_APP_BY, "app_share_ratio")


# --- the server's slots -------------------------------------------------------------------------

def _slots(name: str, severity: str, expr: str, for_: str, summary: str, consequence: str
           ) -> Alert:
    """A target-level alert on slot utilization: counts, the largest holder, the right fix."""
    return Alert(
        name, GROUP, severity, expr, for_,
        ON_POSTGRES + summary,
        "{{ $labels.target }} has " + _CLIENTS + " client connections for " + _USABLE
        + " usable slots (max_connections minus reserved slots)" + consequence + " "
        + _LARGEST_HOLDER + " " + _NOT_MAX_CONNECTIONS,
    )


def near_limit() -> Alert:
    """Filling up; one application holding most slots pages as that application's alert."""
    return _slots(
        "PostgreSQLConnectionsNearLimit", "warning",
        promql.unless(f"{_UTIL_BY_T} > [[near_limit_ratio]] <= [[exhausted_ratio]]", "<T>",
                      _APP_HOLDS),
        "near_limit_for_seconds",
        "{{ $value | humanizePercentage }} of usable connection slots in use",
        ". Find out who holds the slots and why before they run out.")


def exhausted() -> Alert:
    """Full: the page names the largest application in its summary."""
    return _slots(
        "PostgreSQLConnectionsExhausted", "critical", _EXHAUSTED, "exhausted_for_seconds",
        "connection slots exhausted ({{ $value | humanizePercentage }} in use)"
        + first(_TOP_APP, ", application_name {{ .Labels.application_name }} holds "
                          "{{ .Value | humanize }}"),
        "; new connections are failing or about to fail with 'remaining connection "
        "slots are reserved' or 'sorry, too many clients already' (Prisma P2037, "
        "node-postgres connect timeouts).")


# --- who holds them -----------------------------------------------------------------------------

def _holds_most(name: str, by: str, share: str, who: str, sel: str, args: tuple[str, ...],
                said_already: tuple[str, str] | None, extra_text: str) -> Alert:
    """One holder (an application, or an application on one host) holds most usable slots."""
    expr = promql.unless(_holding(by, share), "<T>", _EXHAUSTED)
    if said_already is not None:
        expr = promql.unless(expr, *said_already)
    return Alert(
        name, GROUP, "warning", expr, "holder_for_seconds",
        ON_POSTGRES + who + " holds {{ $value | humanize }} of " + _USABLE
        + " usable connection slots",
        who + " holds {{ $value | humanize }} of " + _USABLE + " usable slots on "
        "{{ $labels.target }} (server at " + _UTIL + "); "
        + scalar(f"sum(@count@{{{sel},{IDLE}}})", *args)
        + " of them are idle and "
        + scalar(f"sum(@count@{{{sel},{IN_IIT}}})", *args)
        + " idle in transaction. " + extra_text + " " + _NOT_MAX_CONNECTIONS,
    )


def application_holds_most() -> Alert:
    return _holds_most(
        "PostgreSQLApplicationHoldsMostSlots", _APP_BY, "app_share_ratio",
        "application_name {{ $labels.application_name }}", _APP_SEL, _APP_ARGS, None,
        "Largest hosts:" + listing(f"topk(3, sum by (client_addr) (@count@{{{_APP_SEL}}}))",
                                   _APP_ARGS,
                                   "{{ $s.Labels.client_addr }} ({{ $s.Value | humanize }})",
                                   "client_addr")
        + ". Mostly idle connections mean several client instances each with its own pool "
        "(one new PrismaClient() per module or request) or an over-sized pool.")


def application_host_holds_most() -> Alert:
    """Said already by the application alert when the application has no other host."""
    return _holds_most(
        "PostgreSQLApplicationHostHoldsMostSlots", _HOLDER_BY, "app_host_share_ratio",
        _HOLDER, _HOST_SEL, _HOST_ARGS,
        (_APP_BY, "count by (<T>, application_name) (\n"
                  "  sum by (<T>, application_name, client_addr) (@count@)\n) == 1"),
        "Its application also connects from other hosts; this one holds most of the "
        "server, usually several client instances (processes, workers or per-request "
        "clients) each with its own pool.")


def idle_hoarding() -> Alert:
    """Many connections idle for long; exhausted, or one application holding most slots,
    pages instead (that alert counts the idle)."""
    hoarding = (f"(\n  sum by ({_HOLDER_BY}) (@count@{{{promql.IDLE}}})\n"
                "  >= [[idle_hoarding_connections]]\n)\n"
                f"and on ({_HOLDER_BY})\n(\n"
                f"  max by ({_HOLDER_BY}) (@state_age@{{{promql.IDLE}}})\n"
                "  > [[idle_hoarding_age_seconds]]\n)")
    return Alert(
        "PostgreSQLIdleConnectionHoarding", GROUP, "warning",
        promql.unless(promql.unless(hoarding, "<T>", _EXHAUSTED), _APP_BY, _APP_HOLDS),
        "idle_hoarding_for_seconds",
        ON_POSTGRES + _HOLDER + " keeps {{ $value | humanize }} connections idle",
        _HOLDER + " keeps {{ $value | humanize }} connections idle on {{ $labels.target }} "
        "(the oldest idle for "
        + scalar(f"max(@state_age@{{{_HOST_SEL},{IDLE}}})", *_HOST_ARGS,
                 fn="humanizeDuration", default="?")
        + "), out of " + _USABLE + " usable slots. Connections that stay idle for minutes "
        "are pool capacity nobody uses: too many pools or a pool sized far above its "
        "concurrency.",
    )


def churn() -> Alert:
    return Alert(
        "PostgreSQLConnectionChurn", GROUP, "warning",
        f"sum by ({_HOLDER_BY}) (rate(@opened@[5m]))\n> [[churn_per_second]]",
        "churn_for_seconds",
        ON_POSTGRES + _HOLDER + " opens {{ $value | humanize }} connections per second",
        _HOLDER + " opens {{ $value | humanize }} new connections per second on "
        "{{ $labels.target }} (5-minute average). Each one costs a backend start and "
        "authentication; a client that connects per query, a pool whose idle timeout is "
        "shorter than the gap between requests, or a retry loop reconnecting on errors.",
    )


# --- role and database limits -------------------------------------------------------------------

def _limit_ratio(scope: str, dim: str) -> str:
    """Connections of each role or database (``dim``) over its limit, where one is set."""
    return (f"(\n  sum by (<T>, name) (label_replace(@count@, \"name\", \"$1\", \"{dim}\", "
            "\"(.*)\"))\n"
            "  / on (<T>, name) group_left (scope)\n"
            f"  (max by (<T>, scope, name) (@limit@{{scope=\"{scope}\"}}) > 0)\n"
            "  > [[connection_limit_ratio]]\n)")


def limit_nearly_reached() -> Alert:
    return Alert(
        "PostgreSQLConnectionLimitNearlyReached", GROUP, "warning",
        _limit_ratio(spec.LimitScope.ROLE, "usename") + "\nor\n"
        + _limit_ratio(spec.LimitScope.DATABASE, "datname"),
        "connection_limit_for_seconds",
        ON_POSTGRES + "{{ $labels.scope }} {{ $labels.name }} is at "
        "{{ $value | humanizePercentage }} of its connection limit",
        "{{ $dim := \"datname\" }}{{ if eq $labels.scope \"role\" }}{{ $dim = \"usename\" }}"
        "{{ end }}The {{ $labels.scope }} {{ $labels.name }} on {{ $labels.target }} has "
        + scalar("sum(@count@{target=%q,%s=%q})", "$labels.target", "$dim", "$labels.name")
        + " connections of its limit of "
        + scalar("max(@limit@{target=%q,scope=%q,name=%q})", "$labels.target",
                 "$labels.scope", "$labels.name", default="?")
        + " (rolconnlimit or datconnlimit); beyond it its clients get 'too many "
        "connections for {{ $labels.scope }} \"{{ $labels.name }}\"'. Largest holder:"
        + largest_client("@count@{target=%q,%s=%q}", "$labels.target", "$dim", "$labels.name")
        + ".",
    )


def alerts() -> tuple[Alert, ...]:
    return (near_limit(), exhausted(), application_holds_most(), application_host_holds_most(),
            idle_hoarding(), churn(), limit_nearly_reached())
