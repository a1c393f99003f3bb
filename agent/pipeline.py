"""collect -> aggregate for one PostgreSQL target, wired once: the daemon and ``diagnose`` both
call these, so a poll is attributed the same way whether it is exported or diagnosed."""

from __future__ import annotations

from dataclasses import dataclass

from .aggregate.attribution import Attribution, attribute
from .aggregate.join import Pairing, pairings_for, relabel
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
