"""collect -> aggregate for one PostgreSQL target, wired once: the daemon and ``diagnose`` both
call these, so a poll is attributed the same way whether it is exported or diagnosed."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from . import spec
from .aggregate.attribution import Attribution, attribute
from .aggregate.history import History, caught_holders
from .aggregate.join import Pairing, pairings_for, relabel
from .collect import catch
from .collect.client import TargetClient
from .collect.pgbouncer.snapshot import PoolerSnapshot
from .collect.snapshot import Snapshot
from .config import Config, Target


def server_client(target: Target, config: Config, *, show_queries: bool = False
                  ) -> TargetClient:
    """The collecting client of a PostgreSQL target, as the configuration asks."""
    return TargetClient(target, show_queries=show_queries, dimensions=config.dimensions,
                        max_groups=config.max_groups, client_processes=config.client_processes)


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll, named after the PgBouncer clients holding its backends, and attributed."""

    snapshot: Snapshot
    pairings: tuple[Pairing, ...]
    attribution: Attribution


def observe(snapshot: Snapshot, target: Target, config: Config,
            poolers: tuple[PoolerSnapshot, ...] = ()) -> Observation:
    """Relabel a server's snapshot through the PgBouncer targets in front of it, attribute it."""
    pairings = pairings_for(snapshot, target.dsn, poolers)
    snapshot = relabel(snapshot, pairings)
    return Observation(snapshot, pairings, attribute(snapshot, dimensions=config.dimensions,
                                                     max_groups=config.max_groups))


def record_poll(history: History, attribution: Attribution, client: TargetClient, config: Config,
                burst_s: float, lock: AbstractContextManager[Any] | None = None
                ) -> tuple[catch.Caught, ...]:
    """Add a poll to the history; when the server counted short-lived sessions the polls did not
    catch, follow it with a catch burst of at most ``burst_s`` (none if <= 0) and count what it
    caught too. ``lock`` guards the history, not the burst."""
    guard = lock or nullcontext()
    with guard:
        history.add(attribution)
        due = burst_s > 0 and history.uncaught(catch.ENOUGH, config.thresholds[spec.CHURN_RATE])
    if not due:
        return ()
    caught = client.catch(burst_s)
    with guard:
        history.catch(caught_holders(caught, config.dimensions))
    return caught
