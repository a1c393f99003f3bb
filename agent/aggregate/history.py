"""A bounded rolling history of one target's polls, and the rates read from it (pure).

One poll is one instant: a session that lives 20 ms is never in it, and a crowd of young
connections looks the same whether its client opens them once (a pool starting) or for ever
(churn). The history keeps, per poll, the per-holder counts and the server's exact
``pg_stat_database.sessions`` counters, so the diagnosis can use rates and persistence:

* a database's new-session rate comes from the counter (PostgreSQL 14+), minus the connections
  that stayed open (its client backends' net growth): what is left lived shorter than a poll;
* that rate is attributed to holders by the short-lived backends fast polls or the daemon's
  catch bursts (``collect.catch``, when ``uncaught``) caught (opened but gone again), with how
  many were caught out of how many opened, so the reader knows how sure the attribution is.
  PostgreSQL 13 has no counter: only what the polls caught, a lower bound.

Memory is bounded: samples closer than ``resolution`` merge, older than ``retention`` go, and a
sample holds at most the attribution's (capped) holders.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..collect.catch import Caught
from ..contract import CONNECTION_OPEN_RATE, OVERFLOW_VALUE
from ..spec import State
from .attribution import Attribution

HolderKey = tuple[str, str, str]
"""(datname, application_name, client_addr); a dimension configured out is ''."""
ALL_DATABASES = ""
"""The database key when datname is configured out: the counters of every database summed."""


@dataclass(frozen=True, slots=True)
class HolderCounts:
    """One holder at one poll: client backends, how many idle, how many new since the last."""

    total: int
    idle: int
    opened: int


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    """The server's clock (epoch seconds) when the poll read it."""
    holders: dict[HolderKey, HolderCounts]
    sessions: dict[str, int] | None
    """pg_stat_database.sessions per database; None when the server has no counter (< 14)."""
    outcomes: dict[str, tuple[int, int, int]] | None = None
    """Per database: sessions_abandoned, sessions_fatal, sessions_killed."""

    def backends(self, datname: str) -> int:
        return sum(c.total for k, c in self.holders.items()
                   if datname in (ALL_DATABASES, k[0]))


def sample(a: Attribution) -> Sample:
    """The history's compact view of one poll (on every poll's path: plain loops)."""
    dims = a.dimensions
    at = [dims.index(d) if d in dims else -1
          for d in ("datname", "application_name", "client_addr", "state")]
    acc: dict[HolderKey, list[int]] = {}
    for g in a.groups:
        k = g.key
        key = (k[at[0]] if at[0] >= 0 else "", k[at[1]] if at[1] >= 0 else "",
               k[at[2]] if at[2] >= 0 else "")
        counts = acc.get(key)
        if counts is None:
            counts = acc[key] = [0, 0, 0]
        counts[0] += g.count
        if at[3] >= 0 and k[at[3]] == State.IDLE:
            counts[1] += g.count
        counts[2] += g.opened
    holders = {key: HolderCounts(*counts) for key, counts in acc.items()}
    if a.server_version_num < 140000:
        return Sample(a.taken_at.timestamp(), holders, None)
    by_db = "datname" in a.dimensions
    sessions: dict[str, int] = {}
    outcomes: dict[str, tuple[int, int, int]] = {}
    for d in a.databases:
        name = d.datname if by_db else ALL_DATABASES
        sessions[name] = sessions.get(name, 0) + d.sessions
        before = outcomes.get(name, (0, 0, 0))
        outcomes[name] = (before[0] + d.sessions_abandoned, before[1] + d.sessions_fatal,
                          before[2] + d.sessions_killed)
    return Sample(a.taken_at.timestamp(), holders, sessions, outcomes)


@dataclass(frozen=True, slots=True)
class HolderChurn:
    datname: str
    application_name: str
    client_addr: str
    caught: int
    """Short-lived backends of this holder the polls saw (opened, then gone)."""
    rate: float | None
    """Its share of the database's rate (new sessions/s); None if the server has no counter."""


@dataclass(frozen=True, slots=True)
class DatabaseChurn:
    """New sessions of one database over the observed span."""

    datname: str
    seconds: float
    opened: int | None
    """Sessions the server counted (pg_stat_database.sessions); None before PostgreSQL 14."""
    short_lived: int
    """Sessions that did not stay: opened minus the net growth of client backends (or, without
    the counter, those the polls caught)."""
    sustained: float
    """Share of poll intervals in which new sessions were counted: churn goes on, a burst stops."""
    caught: int
    holders: tuple[HolderChurn, ...]
    ended: tuple[int, int, int] | None = None
    """Sessions that ended abandoned (client vanished), fatal (by an error) or killed (by an
    operator or a timeout) over the span; None before PostgreSQL 14."""

    @property
    def rate(self) -> float:
        return self.short_lived / self.seconds if self.seconds > 0 else 0.0

    @property
    def exact(self) -> bool:
        return self.opened is not None


class History:
    """Samples of one target, oldest first, bounded in time and in count.

    The last ``detail`` seconds keep a sample per ``resolution`` (what rates and persistence
    read); older samples thin out to one per ``coarse`` seconds until ``retention``. Merged
    samples keep every new backend they saw, so counts over any span stay right.
    """

    def __init__(self, retention: float = 900.0, resolution: float = 1.0,
                 detail: float = 60.0, coarse: float = 30.0, max_holders: int = 200) -> None:
        self.retention = retention
        self.max_holders = max_holders
        self.resolution = resolution
        self.detail = detail
        self.coarse = coarse
        self._old: deque[Sample] = deque()
        self._recent: deque[Sample] = deque()
        self._keys: dict[HolderKey, HolderKey] = {}

    def __len__(self) -> int:
        return len(self._old) + len(self._recent)

    @property
    def samples(self) -> tuple[Sample, ...]:
        return (*self._old, *self._recent)

    def add(self, a: Attribution) -> Sample:
        """Record a poll. The newest sample stays open for polls until it is ``resolution``
        after the one before it: they merge (the newer poll's counts, the new backends of
        both), so fast polls do not grow the history."""
        new = self._interned(sample(a))
        recent = self._recent
        if len(recent) > 1 and new.at - recent[-2].at < self.resolution:
            new = _merge(recent.pop(), new, self.max_holders)
        recent.append(new)
        while len(recent) > 1 and new.at - recent[0].at > self.detail:
            self._thin(recent.popleft())
        while self._old and new.at - self._old[0].at > self.retention:
            self._old.popleft()
        return new

    def uncaught(self, enough: int, min_rate: float) -> bool:
        """Whether the server counted, over the last poll interval, at least ``min_rate``
        sessions/s that closed again, of which the polls caught fewer than ``enough`` (and not
        all): a catch burst is due. Only with the exact counter (PostgreSQL 14+): before,
        nothing says any went uncaught."""
        recent = self._recent
        return len(recent) > 1 and any(
            d.exact and d.rate >= min_rate and d.caught < min(d.short_lived, enough)
            for d in churn((recent[-2], recent[-1])))

    def catch(self, counts: dict[HolderKey, int]) -> None:
        """Count the backends a catch burst saw right after the newest poll (which the next
        poll does not count again) among that poll's new backends."""
        if counts and self._recent:
            newest = self._recent[-1]
            burst = Sample(newest.at, {k: HolderCounts(0, 0, n) for k, n in counts.items()},
                           None)
            self._recent[-1] = self._interned(_merge(burst, newest, self.max_holders))

    def _thin(self, s: Sample) -> None:
        old = self._old
        if len(old) > 1 and s.at - old[-2].at < self.coarse:
            s = _merge(old.pop(), s, self.max_holders)
        old.append(s)

    def _interned(self, s: Sample) -> Sample:
        """One key tuple per holder across samples (memory); the table is rebuilt when it
        holds far more holders than the samples still name."""
        if len(self._keys) > 4 * len(s.holders) + 1000:
            self._keys = {k: k for x in self.samples for k in x.holders}
        keys = self._keys
        return Sample(s.at, {keys.setdefault(k, k): c for k, c in s.holders.items()},
                      s.sessions, s.outcomes)

    def span(self, seconds: float | None = None) -> tuple[Sample, ...]:
        """The samples of the last ``seconds`` (all if None)."""
        if seconds is None or not self._recent:
            return self.samples
        end = self._recent[-1].at
        return tuple(s for s in self.samples if end - s.at <= seconds)

    def churn(self, seconds: float | None = None) -> tuple[DatabaseChurn, ...]:
        """New-session rates per database over the last ``seconds``, largest first."""
        return churn(self.span(seconds))

    def min_idle(self, seconds: float | None = None) -> dict[tuple[str, str], int]:
        """Per (application_name, client_addr): the fewest idle connections any sample saw
        (idle through the whole span is hoarding, idle at one instant may be a lull)."""
        per_sample = []
        for s in self.span(seconds):
            per: dict[tuple[str, str], int] = {}
            for (_, app, addr), c in s.holders.items():
                per[app, addr] = per.get((app, addr), 0) + c.idle
            per_sample.append(per)
        keys = {k for per in per_sample for k in per}
        return {k: min(per.get(k, 0) for per in per_sample) for k in keys}

    def seconds(self) -> float:
        """How long the history reaches back."""
        samples = self._old or self._recent
        return self._recent[-1].at - samples[0].at if self._recent else 0.0


OVERFLOW_HOLDER: HolderKey = (OVERFLOW_VALUE, OVERFLOW_VALUE, OVERFLOW_VALUE)
"""Where a merged sample folds the new backends of holders beyond its cap."""


def _merge(old: Sample, new: Sample, limit: int) -> Sample:
    """The newer sample, keeping the new backends both saw. Holders that only the older one
    names (a storm of distinct application names) are capped at ``limit``: the ones with the
    fewest new backends fold into ``OVERFLOW_HOLDER``, so counts over any span stay right."""
    holders = dict(new.holders)
    for key, c in old.holders.items():
        if c.opened:
            n = holders.get(key)
            holders[key] = HolderCounts(n.total if n else 0, n.idle if n else 0,
                                        (n.opened if n else 0) + c.opened)
    if len(holders) > max(limit, len(new.holders)):
        gone = sorted((k for k in holders if k not in new.holders and k != OVERFLOW_HOLDER),
                      key=lambda k: (holders[k].opened, k))
        excess = gone[:len(holders) - max(limit, len(new.holders)) + 1]
        folded = sum(holders.pop(k).opened for k in excess)
        o = holders.get(OVERFLOW_HOLDER, HolderCounts(0, 0, 0))
        holders[OVERFLOW_HOLDER] = HolderCounts(o.total, o.idle, o.opened + folded)
    return Sample(new.at, holders, new.sessions, new.outcomes)


def churn(span: tuple[Sample, ...]) -> tuple[DatabaseChurn, ...]:
    if len(span) < 2:
        return ()
    first, last = span[0], span[-1]
    seconds = last.at - first.at
    caught = _caught(span)
    if first.sessions is not None and last.sessions is not None:
        names = sorted(set(first.sessions) & set(last.sessions))
    else:
        names = sorted({k[0] for k in caught})
    out = []
    for db in names:
        in_db = {k: n for k, n in caught.items() if db in (ALL_DATABASES, k[0])}
        n_caught = sum(in_db.values())
        if first.sessions is not None and last.sessions is not None:
            opened: int | None = last.sessions[db] - first.sessions[db]
            growth = max(0, last.backends(db) - first.backends(db))
            short = max(0, (opened or 0) - growth)
            steps = [b.sessions.get(db, 0) > a.sessions.get(db, 0)
                     for a, b in itertools.pairwise(span)
                     if a.sessions is not None and b.sessions is not None]
        else:
            # Catches are sparse: sustained means caught in both halves of the span.
            opened, short = None, n_caught
            half = len(span) // 2
            steps = [bool(_caught(span[:half + 1])), bool(_caught(span[half:]))]
        rate = short / seconds if seconds > 0 else 0.0
        if opened is not None and not short:
            # The counter says no session was short-lived: every holder's rate is known, 0.
            in_db = {k: 0 for k in last.holders if db in (ALL_DATABASES, k[0])}
        holders = tuple(
            HolderChurn(k[0], k[1], k[2], n,
                        (rate * n / n_caught if n_caught else 0.0) if opened is not None
                        else n / seconds)
            for k, n in sorted(in_db.items(), key=lambda kv: (-kv[1], kv[0])))
        ended = None
        if first.outcomes and last.outcomes and db in first.outcomes and db in last.outcomes:
            (a0, a1, a2), (b0, b1, b2) = first.outcomes[db], last.outcomes[db]
            ended = (b0 - a0, b1 - a1, b2 - a2)
        if opened is not None or n_caught:
            out.append(DatabaseChurn(db, seconds, opened, short,
                                     sum(steps) / len(steps) if steps else 0.0, n_caught,
                                     holders, ended))
    return tuple(sorted(out, key=lambda d: (-d.short_lived, d.datname)))


def _caught(span: tuple[Sample, ...]) -> dict[HolderKey, int]:
    """Per holder: backends the polls saw open that did not stay (new minus net growth)."""
    first, last = span[0], span[-1]
    out: dict[HolderKey, int] = {}
    keys = {k for s in span[1:] for k, c in s.holders.items() if c.opened}
    for key in keys:
        opened = sum(s.holders[key].opened for s in span[1:] if key in s.holders)
        start = first.holders[key].total if key in first.holders else 0
        end = last.holders[key].total if key in last.holders else 0
        short = opened - max(0, end - start)
        if short > 0:
            out[key] = short
    return out


def caught_holders(caught: Iterable[Caught], dimensions: tuple[str, ...]
                   ) -> dict[HolderKey, int]:
    """Catch-burst backends per holder, keyed as ``sample`` keys a poll's groups."""
    by_db, by_app, by_addr = (d in dimensions
                              for d in ("datname", "application_name", "client_addr"))
    out: dict[HolderKey, int] = {}
    for b in caught:
        key = (b.datname if by_db else "", b.application_name if by_app else "",
               b.client_addr if by_addr else "")
        out[key] = out.get(key, 0) + 1
    return out


def open_rate_points(churns: tuple[DatabaseChurn, ...], target: str,
                     dimensions: tuple[str, ...]
                     ) -> dict[str, list[tuple[tuple[tuple[str, str], ...], float]]]:
    """``postgresql.connection.open_rate`` points: attributed rates from exact counters only
    (PostgreSQL 13's caught-only lower bound is not a rate to alert on); dimensions configured
    out are left out, as everywhere."""
    acc: dict[tuple[tuple[str, str], ...], float] = {}
    for d in churns:
        if not d.exact:
            continue
        for h in d.holders:
            attrs = (("target", target), *((k, v) for k, v in (
                ("datname", h.datname), ("application_name", h.application_name),
                ("client_addr", h.client_addr)) if k in dimensions))
            acc[attrs] = acc.get(attrs, 0.0) + (h.rate or 0.0)
    return {CONNECTION_OPEN_RATE.name: sorted(acc.items())}
