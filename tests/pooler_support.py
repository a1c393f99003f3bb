"""Clients of a real PgBouncer for the tests and the benchmark: a lock holder idle in
transaction, and clients whose statements queue in PgBouncer, each on its own thread."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any

import psycopg
from psycopg import conninfo

LOCK_TABLE = "pooler_lock"


def client_port(conn: psycopg.Connection[Any]) -> int:
    """The local TCP port of a client connection: what PgBouncer shows as its ``port``."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        return int(sock.getsockname()[1])


class PooledClients:
    """Client connections through PgBouncer; all closed (holders first) on exit."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[psycopg.Connection[Any]] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def connect(self, app: str, **extra: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(conninfo.make_conninfo(self.dsn, application_name=app, **extra),
                               autocommit=True)
        with self._lock:
            self.conns.append(conn)
        return conn

    def hold_row_lock(self, app: str, row: int = 1) -> psycopg.Connection[Any]:
        """A client that locks a row and stays idle in transaction."""
        conn = self.connect(app)
        conn.execute("BEGIN")
        conn.execute(f"UPDATE {LOCK_TABLE} SET v = v + 1 WHERE id = %s", (row,))
        return conn

    def in_background(self, n: int, app: str, sql: str, **extra: Any) -> None:
        """``n`` clients that each connect and run ``sql`` (queued or blocked until freed)."""
        def run() -> None:
            with contextlib.suppress(psycopg.Error):
                self.connect(app, **extra).execute(sql.encode())

        for _ in range(n):
            thread = threading.Thread(target=run, daemon=True, name=f"pooled-{app}")
            thread.start()
            self.threads.append(thread)

    def close(self) -> None:
        for conn in list(self.conns):
            conn.close()
        for thread in self.threads:
            thread.join(30)
        for conn in self.conns:  # connected while the holders were closing
            conn.close()

    def __enter__(self) -> PooledClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
