"""The one-statement poll reads the same rows as each part's file run on its own."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from agent import contract
from agent.collect import queries
from agent.collect.client import QUERY_CHARS
from agent.collect.part import discover, part_params
from agent.collect.parts import lock_waits, sessions
from agent.demo.server import LocalServer
from agent.demo.workload import Workload


@pytest.mark.all_versions
def test_poll_statement_equals_the_parts_run_alone(pg: LocalServer, workload: Workload) -> None:
    workload.idle(3, "web")
    workload.idle_in_transaction(2, "worker", via="unix")
    workload.lock_chain("locker", 2)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        version = conn.info.server_version
        params: dict[str, Any] = {
            "unset": contract.UNSET_APPLICATION, "local": contract.LOCAL_CLIENT,
            "hidden": contract.HIDDEN, "since": None,
            "show_queries": True, "query_chars": QUERY_CHARS, "statements": True,
            "max_groups": 200, "overflow": contract.OVERFLOW_VALUE,
            "local_nets": ["127.0.0.0/8"], "unix_clients": True,
            **{f"by_{dim}": True for dim in contract.GROUP_DIMENSIONS},
        }
        params.update(part_params(version))
        statement, present = queries.poll(version)
        assert set(present) == {p.name for p in discover()
                                if queries.load(p.name, version) is not None}
        # One transaction: now() and pg_stat_activity's snapshot are the same for every read.
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(statement, params).fetchone()
            assert row is not None
            alone = {}
            for part in present:
                sql = queries.load(part, version)
                assert sql is not None
                alone[part] = cur.execute(sql, params).fetchall()
    assert "pg_catalog.pg_stat_activity" in statement
    assert statement.count("pg_catalog.pg_stat_activity") == 1
    assert {(r["application_name"], r["client_addr"]) for r in row["client_ports"]} == {
        ("web", "127.0.0.1"), ("locker", "127.0.0.1"), ("worker", contract.LOCAL_CLIENT)}
    for part in present:
        composed = row[part]
        if part == "sessions":
            got = sessions.PART.build(composed)
            want = sessions.PART.build([{**r, **{k: r[k].isoformat() if r[k] else None
                                                 for k in ("backend_start", "xact_start",
                                                           "query_start", "state_change")}}
                                        for r in alone[part]])
            assert got == want
            assert any(s.blocking_pids for s in got)
        elif part == "lock_waits":
            got_w = lock_waits.PART.build(composed)
            want_w = lock_waits.PART.build([{**r, "waitstart": r["waitstart"].isoformat()
                                             if r["waitstart"] else None} for r in alone[part]])
            assert got_w == want_w and got_w
        else:
            assert sorted(map(_key, composed)) == sorted(map(_key, alone[part])), part


def _key(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Rows compared as sorted items; floats from JSON may come back as ints."""
    return tuple(sorted((k, float(v) if isinstance(v, int | float) and not isinstance(v, bool)
                         else v) for k, v in row.items()))
