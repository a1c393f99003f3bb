"""PgBouncer targets: a DSN that names the admin console (``dbname=pgbouncer``) is PgBouncer."""

from __future__ import annotations

from psycopg import conninfo

ADMIN_DATABASE = "pgbouncer"


def is_pgbouncer(dsn: str) -> bool:
    """True when the DSN connects to PgBouncer's admin console; no knob needed."""
    try:
        return conninfo.conninfo_to_dict(dsn).get("dbname") == ADMIN_DATABASE
    except Exception:  # a malformed DSN is reported by the poll that uses it
        return False
