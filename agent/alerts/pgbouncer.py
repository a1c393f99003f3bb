"""PgBouncer targets: clients queueing for a pool at its size, and the client limit.

A pool's labels: the target's, ``database``, ``user``.
"""

from __future__ import annotations

from ..spec import PoolerClientState, PoolerServerState
from .annotations import ON_PGBOUNCER, largest_client, listing, scalar
from .rule import Alert

GROUP = "pgconn-agent.pgbouncer"

_POOL = "target=%q,database=%q,user=%q"
_POOL_ARGS = ("$labels.target", "$labels.database", "$labels.user")
_WAITING = f"state='{PoolerClientState.WAITING}'"


def clients_waiting() -> Alert:
    return Alert(
        "PgBouncerClientsWaiting", GROUP, "warning",
        "max by (<T>, database, user) (@pgb_wait@) > [[pgbouncer_wait_seconds]]\n"
        "and on (<T>, database, user)\n"
        "sum by (<T>, database, user) (@pgb_clients@{"
        f'state="{PoolerClientState.WAITING}"' "}) > 0",
        "pgbouncer_wait_for_seconds",
        ON_PGBOUNCER + "clients of pool {{ $labels.database }}/"
        "{{ $labels.user }} wait {{ $value | humanizeDuration }} for a server connection",
        scalar(f"sum(@pgb_clients@{{{_POOL},{_WAITING}}})", *_POOL_ARGS)
        + " clients of pool {{ $labels.database }}/{{ $labels.user }} on PgBouncer "
        "{{ $labels.target }} are waiting for a server connection, the longest for "
        "{{ $value | humanizeDuration }}; the pool has "
        + scalar(f"sum(@pgb_servers@{{{_POOL},state='{PoolerServerState.ACTIVE}'}})",
                 *_POOL_ARGS)
        + " active server connections of its size "
        + scalar(f"max(@pgb_size@{{{_POOL}}})", *_POOL_ARGS, default="?")
        + ". Waiting:"
        + listing(f"topk(3, sum by (application_name) (@pgb_client_count@{{{_POOL},"
                  f"{_WAITING}}}))", _POOL_ARGS,
                  "application_name {{ $s.Labels.application_name }} "
                  "({{ $s.Value | humanize }})", "application_name")
        + ". The pool is at its size: find what keeps its server connections busy (long "
        "or idle transactions, session pool mode) before raising pool_size.",
    )


def client_limit_near() -> Alert:
    return Alert(
        "PgBouncerClientLimitNear", GROUP, "warning",
        "sum by (<T>) (@pgb_client_count@)\n"
        "/ on (<T>) max by (<T>) (@pgb_client_max@)\n"
        "> [[pgbouncer_client_limit_ratio]]",
        "pgbouncer_client_limit_for_seconds",
        ON_PGBOUNCER + "{{ $value | humanizePercentage }} of max_client_conn in use",
        "PgBouncer {{ $labels.target }} holds "
        + scalar("sum(@pgb_client_count@{target=%q})", "$labels.target")
        + " client connections of max_client_conn "
        + scalar("max(@pgb_client_max@{target=%q})", "$labels.target", default="?")
        + "; beyond it new clients are refused ('no more connections allowed'). Largest:"
        + largest_client("@pgb_client_count@{target=%q}", "$labels.target") + ".",
    )


def alerts() -> tuple[Alert, ...]:
    return clients_waiting(), client_limit_near()
