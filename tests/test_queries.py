"""Version gating as data: which SQL file each server version gets, and the settings list."""

from __future__ import annotations

import itertools

import pytest

from agent.collect import queries
from agent.collect.part import discover
from agent.collect.parts.settings import Setting, normalise, setting_names

VERSIONS = {12: 120017, 13: 130013, 14: 140010, 15: 150004, 16: 160002, 17: 170000}


def test_every_query_runs_on_the_oldest_supported_server_or_is_a_named_feature() -> None:
    for query in (p.name for p in discover()):
        assert queries.versions(query), query
        if query != "databases":
            assert queries.versions(query)[0] == queries.OLDEST_SUPPORTED, query


@pytest.mark.parametrize("major", sorted(VERSIONS))
def test_version_gates(major: int) -> None:
    v = VERSIONS[major]
    lock_sql = queries.load("lock_waits", v)
    assert lock_sql is not None
    assert ("waitstart," in lock_sql and "NULL::timestamptz" not in lock_sql) == (major >= 14)
    assert (queries.load("databases", v) is None) == (major < 14)
    names = setting_names(v)
    assert ("reserved_connections" in names) == (major >= 16)
    assert ("idle_session_timeout" in names) == (major >= 14)
    assert ("transaction_timeout" in names) == (major >= 17)


def test_every_sql_file_says_what_it_needs() -> None:
    for query in (p.name for p in discover()):
        for v in queries.versions(query):
            sql = queries.load(query, v)
            assert sql is not None and sql.startswith("-- "), (query, v)
            header = "\n".join(line for line in itertools.takewhile(
                lambda x: x.startswith("--"), sql.splitlines()))
            assert f"PostgreSQL {v // 10000}" in header, (query, v, header)


@pytest.mark.parametrize(("setting", "unit", "expected"), [
    ("60000", "ms", Setting("x", 60.0, "s")),
    ("5", "min", Setting("x", 300.0, "s")),
    ("7200", "s", Setting("x", 7200.0, "s")),
    ("100", "", Setting("x", 100.0, "")),
    ("0", "ms", Setting("x", 0.0, "s")),
    ("16384", "8kB", Setting("x", 16384.0, "8kB")),
])
def test_settings_normalise_to_seconds(setting: str, unit: str, expected: Setting) -> None:
    assert normalise("x", setting, unit) == expected
