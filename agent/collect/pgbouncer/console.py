"""Reads PgBouncer's admin console: ``SHOW`` commands in autocommit (the console has no
transactions), one dedicated connection per target, reconnecting on demand."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import conninfo

from ...config import Target
from ..client import POLL_DEADLINE_S, agent_params, classify
from ..deadline import Guarded
from ..part import ConsoleRows, Index, discover_console
from . import ADMIN_DATABASE
from .snapshot import PoolerSnapshot

log = logging.getLogger(__name__)
PARTS = "agent.collect.pgbouncer.parts"


def console_string(target: Target) -> str:
    """The target's DSN with the agent's name and a connect timeout. No ``options``: the
    console rejects startup options, and it cannot write anyway."""
    return conninfo.make_conninfo("", **agent_params(target))


class ConsoleClient:
    """Holds one PgBouncer target's console connection; ``poll`` reads a PoolerSnapshot under
    the same client-side deadline as a server's poll (``client.POLL_DEADLINE_S``); ``close``
    may come from another thread and aborts a poll in flight."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._guard: Guarded[psycopg.Connection[tuple[Any, ...]]] = Guarded(target.name,
                                                                            POLL_DEADLINE_S)

    def connect(self) -> None:
        if self._guard.connected:
            return
        try:
            # No prepared statements: psycopg prepares a query run 5 times, and the console
            # answers "extended query protocol not supported by admin console".
            self._guard.conn = psycopg.connect(console_string(self.target), autocommit=True,
                                               prepare_threshold=None)
        except (psycopg.Error, OSError) as exc:
            raise classify(exc, self.target.name, connecting=True) from None
        log.info("connected", extra={"target": self.target.name, "pgbouncer": self.version})

    @property
    def version(self) -> str:
        assert self._guard.conn is not None
        return self._guard.conn.info.parameter_status("server_version") or "unknown"

    def close(self) -> None:
        self._guard.close()

    def poll(self) -> PoolerSnapshot:
        with self._guard.polling():
            self.connect()
            return self._guard.run(self._read, lambda exc: classify(exc, self.target.name),
                                   catch=(psycopg.Error, KeyError))

    def _read(self, conn: psycopg.Connection[tuple[Any, ...]]) -> PoolerSnapshot:
        def show(what: str) -> tuple[ConsoleRows, Index]:
            cur = conn.execute(f"SHOW {what}")
            ix = {d.name: i for i, d in enumerate(cur.description or ())}
            db = ix.get("database", ix.get("name"))
            rows = cur.fetchall()
            return [r for r in rows if r[db] != ADMIN_DATABASE] if db is not None else rows, ix

        taken_at = datetime.now(UTC)
        config = {r[0]: r[1] for r in conn.execute("SHOW CONFIG").fetchall()}
        return PoolerSnapshot(
            target=self.target.name,
            taken_at=taken_at,
            version=self.version,
            max_client_conn=int(config["max_client_conn"]),
            parts={part.name: part.build(*show(part.command))
                   for part in discover_console(PARTS)},
        )
