"""Server-wide series once per server, database-scoped series once per database.

The split is checked as a pure step on hand-built snapshots, then end to end: one agent process
with four targets on one real server (three through 127.0.0.1, one through ``localhost``, which
the system identifier reveals as the same server) exports every series exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_e2e import Agent, wait_until
from snapshots import ConnectionLimit, DatabaseSessions, WaitCount, group, snapshot

from agent import config as cfg
from agent import contract as c
from agent.aggregate.attribution import attribute
from agent.aggregate.fleet import split
from agent.aggregate.points import PointSet, points
from agent.demo.server import LocalServer
from agent.servers import database_of, server_key

DATABASES = ("shop", "billing", "unwatched")


def server_points() -> PointSet:
    snap = snapshot(
        [group("shop-web", db="shop", count=4, opened=2), group("billing", db="billing", count=3),
         group("cron", db="unwatched", count=2)],
        waits=(WaitCount("shop", "shop_app", "shop-web", "IO", "DataFileRead", 1),),
        limits=(ConnectionLimit("role", "shop_app", 50, 4),),
        databases=tuple(DatabaseSessions(d, 10 + i, 1, 2, 3) for i, d in enumerate(DATABASES)))
    return points(attribute(snap, max_groups=10), max_groups=10)


def placed(shares: dict[str, PointSet]) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
    """(metric, attributes without target) -> how many targets export it."""
    return Counter((metric, attrs[1:]) for share in shares.values()
                   for metric, pts in share.points.items() for attrs, _ in pts)


def test_each_point_goes_to_one_target_database_points_to_their_database() -> None:
    whole = server_points()
    shares = split(whole, {"b-shop": "shop", "a-main": "postgres", "c-billing": "billing",
                           "d-shop-again": "shop"})
    counts = placed(shares)
    expected = Counter((m, attrs[1:]) for m, pts in whole.points.items() for attrs, _ in pts)
    assert counts == expected  # nothing lost, nothing twice
    for name, share in shares.items():
        for metric, pts in share.points.items():
            for attrs, _ in pts:
                assert attrs[0] == ("target", name)
                datname = dict(attrs).get("datname")
                owner = {"shop": "b-shop", "billing": "c-billing"}.get(datname or "", "a-main")
                assert name == owner, (metric, attrs)
    assert shares["d-shop-again"].points[c.CONNECTION_COUNT.name] == []
    assert {m for m, pts in shares["a-main"].points.items() if pts} >= {
        c.CONNECTION_MAX.name, c.SETTING.name, c.BACKEND_COUNT.name, c.CONNECTION_LIMIT.name}
    assert [a for a, _ in shares["a-main"].opened] == [
        (("target", "a-main"), ("application_name", "shop-web"), ("client_addr", "10.0.0.5"))]
    sessions = {dict(a)["datname"]: dict(a)["target"] for share in shares.values()
                for a, _ in share.points[c.SESSIONS.name]}
    assert sessions == {"shop": "b-shop", "billing": "c-billing", "unwatched": "a-main"}


def test_a_second_group_of_the_same_server_keeps_only_its_databases() -> None:
    shares = split(server_points(), {"x-billing": "billing"}, server_wide=False)
    exported = {(m, dict(a).get("datname")) for m, pts in shares["x-billing"].points.items()
                for a, _ in pts}
    assert exported and {d for _, d in exported} == {"billing"}
    assert shares["x-billing"].opened == []


def test_without_the_datname_dimension_everything_is_server_wide() -> None:
    dims = tuple(d for d in c.GROUP_DIMENSIONS if d != "datname")
    whole = points(attribute(snapshot([group(db="shop"), group(db="billing")]),
                             dimensions=dims))
    shares = split(whole, {"a": "shop", "b": "billing"})
    assert shares["a"].points[c.CONNECTION_COUNT.name]
    assert shares["b"].points[c.CONNECTION_COUNT.name] == []


def test_scopes_of_the_contract() -> None:
    assert c.scope(c.CONNECTION_COUNT) == "database"
    assert c.scope(c.SESSIONS) == "database"
    assert c.scope(c.CONNECTION_MAX) == "server"
    assert c.scope(c.CONNECTION_OPENED) == "server"
    assert c.scope(c.AGENT_UP) == "target"


def test_server_key_and_database_follow_libpq() -> None:
    t = cfg.Target("t", "host=DB.example port=6432 dbname=orders user=u")
    assert (server_key(t), database_of(t)) == ("db.example:6432", "orders")
    assert server_key(cfg.Target("t", "host=/run/pg user=u")) == "local:/run/pg:5432"
    assert database_of(cfg.Target("t", "host=h user=alice")) == "alice"
    assert server_key(cfg.Target("t", "host=h", server="primary-1")) == "primary-1"


# -- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_server() -> Iterator[LocalServer]:
    with LocalServer() as server:
        server.execute("CREATE DATABASE shop", "CREATE DATABASE billing",
                       "CREATE DATABASE reports")
        yield server


def write_config(path: Path, server: LocalServer) -> Path:
    targets = [("a-main", server.dsn()), ("b-shop", server.dsn(dbname="shop")),
               ("c-reports", server.dsn(dbname="reports")),
               ("d-billing", server.dsn(dbname="billing").replace("127.0.0.1", "localhost"))]
    path.write_text("[agent]\ninterval = 1\n" + "".join(
        f"[[targets]]\nname = '{n}'\ndsn = '{d}'\n" for n, d in targets))
    return path


def test_one_agent_exports_each_series_once_with_one_poll_per_group(
        fleet_server: LocalServer, tmp_path: Path) -> None:
    from agent.demo.workload import Workload

    with Workload(fleet_server.dsn()) as work, \
            Agent(["--config", str(write_config(tmp_path / "a.toml", fleet_server)),
                   "--listen", "127.0.0.1:0"]) as agent:
        work.idle(2, "shop-web", dbname="shop")
        work.idle(1, "biller", dbname="billing")
        agent.started()

        def settled() -> list[tuple[str, dict[str, str], float]] | None:
            samples = agent.samples()
            ups = {lab["target"] for n, lab, v in samples if n == "pgconn_agent_up" and v == 1}
            apps = {lab.get("application_name") for n, lab, _ in samples
                    if n == "postgresql_connection_count"}
            return samples if len(ups) == 4 and {"shop-web", "biller"} <= apps else None

        wait_until(settled, 20, "all four targets up with the workload seen")
        time.sleep(2.5)  # two more polls: the localhost group's first poll preceded its claim
        samples = settled()
        assert samples is not None
        agent_backends = fleet_server.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgconn-agent'")
        code, _ = agent.stop()
    assert code == 0
    assert agent_backends == [(2,)]  # one per host:port group, not one per target
    server_series = Counter((n, tuple(sorted((k, v) for k, v in lab.items() if k != "target")))
                            for n, lab, _ in samples if n.startswith("postgresql_"))
    assert server_series and max(server_series.values()) == 1, server_series.most_common(3)
    by_metric: dict[str, set[str]] = {}
    for n, lab, _ in samples:
        by_metric.setdefault(n, set()).add(lab["target"])
    assert by_metric["postgresql_connection_max"] == {"a-main"}
    assert by_metric["postgresql_setting"] == {"a-main"}
    assert by_metric["pgconn_agent_up"] == {"a-main", "b-shop", "c-reports", "d-billing"}
    # Two polls per round (one per host:port group), each timed under its group's lead.
    assert by_metric["pgconn_agent_poll_duration_seconds_count"] == {"a-main", "d-billing"}
    count_targets = {lab["datname"]: lab["target"] for n, lab, _ in samples
                     if n == "postgresql_connection_count" and lab.get("datname")}
    assert count_targets["shop"] == "b-shop"
    assert count_targets["billing"] == "d-billing"  # the localhost group: its database only
    sessions = {lab["datname"]: lab["target"] for n, lab, _ in samples
                if n == "postgresql_sessions_total"}
    watched = {"shop": "b-shop", "reports": "c-reports", "billing": "d-billing"}
    assert {d: t for d, t in sessions.items() if d in watched} == watched
    assert {t for d, t in sessions.items() if d not in watched} == {"a-main"}
