"""Version-gated SQL: ``parts/<part>/<lowest server_version_num>.sql``, picked once per server.

Each file opens with a comment saying what it needs; the loader picks the file with the highest
version not above the server's. A part with no file for an old server is a feature that server
lacks (``None``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from .part import PACKAGE, discover

SQL_ROOT = resources.files(PACKAGE)
OLDEST_SUPPORTED = 120000
"""PostgreSQL 12: the oldest server the agent supports."""


@cache
def versions(query: str, package: str | None = None) -> tuple[int, ...]:
    """Server versions for which ``query`` has a file (in ``package``, default the parts'),
    ascending."""
    folder = _root(package) / query
    if not folder.is_dir():
        return ()
    return tuple(sorted(int(f.name.removesuffix(".sql")) for f in folder.iterdir()
                        if f.name.endswith(".sql")))


@cache
def load(query: str, server_version_num: int, package: str | None = None) -> str | None:
    """The SQL of ``query`` (in ``package``, default the parts') for a server, or ``None`` if
    that server lacks the feature."""
    fitting = [v for v in versions(query, package) if v <= server_version_num]
    if not fitting:
        return None
    return (_root(package) / query / f"{fitting[-1]}.sql").read_text(encoding="utf-8")


def _root(package: str | None) -> Traversable:
    return resources.files(package) if package else SQL_ROOT


ACTIVITY_COLUMNS = (
    "datid, datname, pid, usesysid, usename, application_name, client_addr, client_hostname, "
    "client_port, backend_start, xact_start, query_start, state_change, wait_event_type, "
    "wait_event, state, backend_type, CASE WHEN %(show_queries)s THEN query END AS query")
"""The pg_stat_activity columns the parts read; query text is copied only when asked for."""
QUERY_ID_SINCE = 140000
"""pg_stat_activity.query_id (PostgreSQL 14+)."""


@cache
def poll(server_version_num: int, *, with_cached: bool = True
         ) -> tuple[str, tuple[str, ...]]:
    """Every part of a poll as one statement, and the names of its JSON columns.

    Building pg_stat_activity's rows is most of what a poll costs the server, and each part's
    file reads the view: so the statement shadows ``pg_stat_activity`` and ``pg_locks`` with
    MATERIALIZED CTEs of the same name (unqualified names resolve to a CTE first), reads each
    once, and returns each part's rows as one JSON array (``json_agg`` keeps the part's order).
    A part the server lacks (``load`` gives None) is left out, and so are the cached parts
    (settings) when the caller still has them (they change only when ``pg_conf_load_time()``
    does, which the statement returns). The parts are those ``discover`` finds, by name.
    """
    parts = [(p.name, load(p.name, server_version_num)) for p in discover()
             if with_cached or not p.cached]
    present = tuple(name for name, sql in parts if sql is not None)
    columns = ",\n".join(f"(SELECT coalesce(json_agg(p), '[]') FROM (\n{sql.rstrip()}\n) AS p) "
                         f"AS {name}" for name, sql in parts if sql is not None)
    activity = ACTIVITY_COLUMNS + (", query_id" if server_version_num >= QUERY_ID_SINCE else "")
    statement = ("WITH pg_stat_activity AS MATERIALIZED "
                 f"(SELECT {activity} FROM pg_catalog.pg_stat_activity),\n"
                 "pg_locks AS MATERIALIZED (SELECT * FROM pg_catalog.pg_locks)\n"
                 f"SELECT now() AS taken_at, pg_conf_load_time() AS conf_load_time,\n{columns}")
    return statement, present
