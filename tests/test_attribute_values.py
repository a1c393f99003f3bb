"""Attribute values with a closed set (agent/spec.py) are the only ones a real poll exports:
a new state, outcome or scope from the SQL fails here instead of leaking into dashboards and
rules that select on the declared values."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent import contract as c
from agent import spec
from agent.aggregate.points import points
from agent.collect.client import TargetClient
from agent.config import Config, Target
from agent.demo.server import LocalServer
from agent.demo.workload import Workload
from agent.pipeline import observe

DECLARED: dict[tuple[str, str], set[str]] = {
    (c.SESSIONS.name, "outcome"): set(spec.SessionOutcome),
    (c.CONNECTION_LIMIT.name, "scope"): set(spec.LimitScope),
    (c.CONNECTION_COUNT.name, "state"): {*spec.State, c.HIDDEN, c.OVERFLOW_VALUE},
}


@pytest.fixture
def limited(pg: LocalServer) -> Iterator[None]:
    pg.execute("DROP ROLE IF EXISTS capped", "CREATE ROLE capped LOGIN CONNECTION LIMIT 3",
               "DROP DATABASE IF EXISTS capped_db", "CREATE DATABASE capped_db CONNECTION LIMIT 4")
    yield
    pg.execute("DROP DATABASE IF EXISTS capped_db WITH (FORCE)", "DROP ROLE IF EXISTS capped")


def test_a_real_poll_exports_only_declared_values(pg: LocalServer, workload: Workload,
                                                 limited: None) -> None:
    workload.idle(2, "shop-web", user="capped")
    workload.idle_in_transaction(1, "forgetful", dbname="capped_db")
    target = Target("values", pg.dsn())
    client = TargetClient(target)
    try:
        observed = observe(client.poll(), target, Config(targets=(target,)))
    finally:
        client.close()
    exported = points(observed.attribution).points
    for (metric, attribute), allowed in DECLARED.items():
        seen = {dict(attrs)[attribute] for attrs, _ in exported[metric]}
        assert seen, (metric, "no points: the test would prove nothing")
        assert seen <= allowed, (metric, attribute, seen - allowed)
    scopes = {dict(attrs)["scope"] for attrs, _ in exported[c.CONNECTION_LIMIT.name]}
    assert scopes == set(spec.LimitScope)
