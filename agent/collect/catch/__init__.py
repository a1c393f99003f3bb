"""Churn catch samples: a short burst of light reads of the backends started since the last
poll, so sessions that live milliseconds are seen and attributed at the daemon's interval.

A poll is one instant per interval: at 15 s a session living 10 ms is in one poll out of 1,500,
so the server's exact new-session count (pg_stat_database.sessions) had no holder to go to.
When the history says an interval had short-lived sessions (at least the ``churn_rate``
threshold, 1/s by default: less is no finding, and a burst would catch under one) that the polls
did not catch enough of (``History.uncaught``), the poll is followed by one burst: up to
``SAMPLES`` samples ``SPACING_S`` apart on average (jittered, so a client that connects on a
fixed period is not aliased), ended once ``ENOUGH`` new backends were caught or its time budget
is spent (a tenth of the poll interval, so the poll schedule never waits for it). Each sample
reads only the young backends' pid, start, database, application name and client address
(``120000.sql``), never query text, on the agent's own connection under the poll's client
deadline.

A sample catches the sessions alive at that instant: one living L ms during a burst is caught
with a chance of about L / 20 (always from ~30 ms), so each holder's share is its share of what
was caught: shorter-lived sessions are under-represented, and a 1 ms session is rarely seen.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ... import contract
from .. import queries

SPACING_S = 0.02
"""Mean time between the starts of two samples (each gap 0.5 to 1.5 times it)."""
SAMPLES = 50
"""At most this many samples per burst (1 s at ``SPACING_S``)."""
ENOUGH = 20
"""New backends that make a share good to about ±10 %: the burst ends once it caught these."""
BUDGET_SHARE = 0.1
"""A burst lasts at most this share of the poll interval (so at most 1 s from a 10 s interval)."""
LOOKBACK_S = 1.0
"""How far before the poll a sample looks: a backend appears once authenticated, after its
start. The poll listed the backends it saw, so none is counted twice."""
QUERY = "catch"


@dataclass(frozen=True, slots=True)
class Caught:
    """A client backend a catch sample saw that the previous poll did not list."""

    pid: int
    backend_start: datetime
    datname: str
    application_name: str
    client_addr: str


def budget(interval: float) -> float:
    """The longest burst that follows a poll of this interval."""
    return min(SAMPLES * SPACING_S, BUDGET_SHARE * interval)


def sql(server_version_num: int) -> str | None:
    return queries.load(QUERY, server_version_num, "agent.collect")


def burst(sample: Callable[[dict[str, Any]], Iterable[tuple[Any, ...]]], since: datetime,
          known: Iterable[int], seconds: float) -> Iterator[Caught]:
    """Yield each backend started after ``since`` (less ``LOOKBACK_S``) once, unless ``known``,
    sampling with ``sample(params)`` until ``seconds`` are spent, ``SAMPLES`` were taken or
    ``ENOUGH`` were caught."""
    params = {"since": since - timedelta(seconds=LOOKBACK_S), "unset": contract.UNSET_APPLICATION,
              "local": contract.LOCAL_CLIENT, "hidden": contract.HIDDEN}
    seen = set(known)
    end = time.monotonic() + seconds
    caught = 0
    for _ in range(SAMPLES):
        began = time.monotonic()
        if began >= end or caught >= ENOUGH:
            return
        for row in sample(params):
            backend = Caught(*row)
            if backend.pid not in seen:
                seen.add(backend.pid)
                caught += 1
                yield backend
        pause = random.uniform(0.5, 1.5) * SPACING_S - (time.monotonic() - began)
        time.sleep(max(0.0, min(pause, end - time.monotonic())))
