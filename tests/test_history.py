"""The rolling history on hand-built polls: rates from the server's counter, attribution by
caught short-lived backends, burst versus churn, persistence, and bounded memory."""

from __future__ import annotations

import itertools
from typing import Any

from histories import churning, poll
from snapshots import group

from agent import contract as c
from agent.aggregate.history import History, open_rate_points
from agent.diagnose.findings import diagnose


def rates(h: History, dimensions: tuple[str, ...]) -> list[tuple[Any, float]]:
    """The open-rate points of target db1, by the contract's name."""
    return open_rate_points(h.churn(), "db1", dimensions)[c.CONNECTION_OPEN_RATE.name]


def test_churn_rate_comes_from_the_counter_and_goes_to_the_caught_holder() -> None:
    h = churning()
    shop, quiet = h.churn()
    assert (quiet.datname, quiet.short_lived, quiet.holders) == ("postgres", 0, ())
    assert (shop.datname, shop.opened, shop.short_lived, shop.seconds) == ("shop", 60, 58, 5.0)
    assert shop.sustained == 1.0 and shop.exact
    assert shop.ended == (6, 0, 0)  # abandoned: 160 // 10 - 100 // 10
    (api,) = shop.holders
    assert (api.application_name, api.caught) == ("api", 8)
    assert abs((api.rate or 0) - 58 / 5) < 1e-9
    points = rates(h, ("datname", "application_name", "client_addr"))
    assert points == [((("target", "db1"), ("datname", "shop"), ("application_name", "api"),
                        ("client_addr", "10.0.0.5")), 58 / 5)]
    assert rates(h, ("application_name",))[0][0] == (
        ("target", "db1"), ("application_name", "api"))


def test_churn_finding_names_rate_database_and_application() -> None:
    h = churning()
    a = poll(5, 160, group("api", "idle", 1), group("api", "active", 2), group("web", "idle", 5))
    found = diagnose(a, history=h)
    api = next(f for f in found if f.data.get("application_name") == "api")
    assert api.code == "connection_churn"
    assert "opens 11.6 new connections/s in database shop" in api.title
    assert "caught 8 of the 58 short-lived sessions, 8 of them (100%)" in " ".join(api.evidence)
    assert "(confident)" in " ".join(api.evidence)
    assert "ended: 6 abandoned (the client vanished)" in api.evidence[1]


def test_a_quiet_database_gives_its_holders_a_known_zero() -> None:
    h = History(resolution=0)
    for i in range(3):
        h.add(poll(i, 100, group("web", "idle", 4), group("api", "idle", 1)))
    points = rates(h, ("datname", "application_name"))
    assert points == [((("target", "db1"), ("datname", "shop"), ("application_name", app)), 0.0)
                      for app in ("api", "web")]


def test_a_burst_that_stays_open_is_not_churn() -> None:
    h = History(resolution=0)
    h.add(poll(0, 100, group("web", "idle", 1)))
    h.add(poll(1, 170, group("web", "idle", 71, opened=70, young=70)))
    for i in range(2, 6):
        h.add(poll(i, 170, group("web", "idle", 71, young=70)))
    shop = [d for d in h.churn() if d.datname == "shop"]
    assert len(shop) <= 1, shop  # one entry a database, if any
    assert all(d.short_lived == 0 for d in shop), shop
    found = diagnose(poll(5, 170, group("web", "idle", 71, young=70, state_age=5.0)),
                     history=h)
    web = next(f for f in found if f.data.get("application_name") == "web")
    assert web.code == "idle_hoarding"
    words = (web.title + " ".join(web.evidence) + web.recommendation).lower()
    assert "churn" not in words and "retry" not in words
    assert "burst: 70 of its connections" in words


def test_without_the_counter_only_caught_sessions_count_as_a_lower_bound() -> None:
    h = History(resolution=0)
    for i in range(4):
        caught = [group("api", "active", 3, opened=3)] if i else []
        h.add(poll(i, None, group("api", "idle", 1), *caught, version=130010))
    (d,) = h.churn()
    # 9 caught, but the last poll still sees 3: they may stay (lower bound)
    assert not d.exact and d.opened is None and d.short_lived == 6 and d.rate == 2.0
    assert rates(h, ("datname",)) == []


def test_idle_through_the_window_is_persistence_and_a_lull_is_not() -> None:
    h = History(resolution=0)
    for i, idle in enumerate((12, 12, 3, 12)):
        h.add(poll(i, 1, group("web", "idle", idle), group("web", "active", 12 - idle)))
    assert h.min_idle() == {("web", "10.0.0.5"): 3}


def test_memory_is_bounded_in_time_and_in_count() -> None:
    h = History(retention=900, resolution=1.0)
    for i in range(4 * 1200):  # four polls a second for 20 minutes
        h.add(poll(i / 4, i, group("api", "idle", 1, opened=1)))
    # the last minute at about one sample a second, the 14 minutes before at one per ~30 s
    assert len(h) <= 2 * 60 + 2 + 2 * 840 // 30 + 2
    assert 900 - 30 <= h.seconds() <= 900  # the oldest kept sample is one coarse step old
    recent = h.span(60)
    assert all(b.at - a.at <= 1.0 for a, b in itertools.pairwise(recent))
    # merged and thinned samples keep every new backend: 4 a second over the span
    opened = sum(c.opened for s in h.samples[1:] for c in s.holders.values())
    assert abs(opened - 4 * h.seconds()) <= 4
    (shop, _) = h.churn()
    assert shop.opened == 4 * h.seconds()  # the counter's delta over the whole span


def test_a_storm_of_distinct_names_stays_within_the_holder_cap() -> None:
    """Every poll brings new application names: merged samples fold the oldest holders into
    the overflow holder instead of keeping each name, and no new backend is lost."""
    h = History(retention=900, resolution=1.0, max_holders=20)
    for i in range(4 * 600):  # four polls a second for 10 minutes, 5 new names each
        h.add(poll(i / 4, i, *(group(f"app-{i}-{n}", "idle", 1, opened=1) for n in range(5))))
    assert max(len(s.holders) for s in h.samples) <= 20
    opened = sum(c.opened for s in h.samples[1:] for c in s.holders.values())
    assert abs(opened - 20 * h.seconds()) <= 20  # 20 new backends a second over the span
    assert any(c.OVERFLOW_VALUE in k for s in h.samples for k in s.holders)
