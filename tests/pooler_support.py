"""A real PgBouncer for the tests and the benchmark: a throwaway PgBouncer (Debian's binary) in
front of a ``LocalServer``, and clients of it (a lock holder idle in transaction, clients whose
statements queue in PgBouncer, each on its own thread).

PgBouncer refuses to run as root, so as root it runs as ``postgres`` like the servers. It reaches
the server over the server's unix socket; clients reach it on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from agent.collect.pgbouncer.console import ConsoleClient
from agent.collect.pgbouncer.snapshot import PoolerSnapshot
from agent.config import Target
from agent.demo.server import LocalServer, free_port

MONITOR_ROLE = "monitor"
"""The agent's console role: a ``stats_users`` entry, no admin rights."""


class LocalBouncer:
    """Start with ``start()`` (or as a context manager); ``stop()`` removes everything."""

    def __init__(self, server: LocalServer, *, databases: tuple[str, ...] = ("postgres",),
                 pool_mode: str = "transaction", pool_size: int = 5,
                 max_client_conn: int = 100, max_db_connections: int = 0,
                 users: tuple[str, ...] = ("postgres",)) -> None:
        self.server = server
        self.port = free_port()
        self.databases = databases
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.max_db_connections = max_db_connections
        self.users = (*users, MONITOR_ROLE)
        self.tmp: Path | None = None

    def dsn(self, *, user: str = "postgres", dbname: str = "postgres", **extra: Any) -> str:
        return conninfo.make_conninfo("", host="127.0.0.1", port=self.port, user=user,
                                      dbname=dbname, **extra)

    def console_dsn(self) -> str:
        return self.dsn(user=MONITOR_ROLE, dbname="pgbouncer")

    def poll(self) -> PoolerSnapshot:
        """One poll of the console, as the agent's PgBouncer target does it."""
        client = ConsoleClient(Target("pgb", self.console_dsn()))
        try:
            return client.poll()
        finally:
            client.close()

    @property
    def pid(self) -> int:
        assert self.tmp is not None
        return int((self.tmp / "pgbouncer.pid").read_text())

    def start(self) -> LocalBouncer:
        self.tmp = Path(tempfile.mkdtemp(prefix="pgconn-pgbouncer-"))
        self.tmp.chmod(0o777)
        (self.tmp / "users.txt").write_text("".join(f'"{u}" ""\n' for u in self.users))
        dbs = "".join(f"{d} = host={self.server.socket_dir} port={self.server.port} "
                      f"dbname={d}\n" for d in self.databases)
        (self.tmp / "pgbouncer.ini").write_text(
            f"[databases]\n{dbs}\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\nunix_socket_dir = {self.tmp}\nauth_type = trust\n"
            f"auth_file = {self.tmp}/users.txt\npool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = {self.max_client_conn}\n"
            f"max_db_connections = {self.max_db_connections}\n"
            f"stats_users = {MONITOR_ROLE}\nlogfile = {self.tmp}/pgbouncer.log\n"
            f"pidfile = {self.tmp}/pgbouncer.pid\n")
        # Each client and server connection is a descriptor: lift the soft limit to the hard.
        cmd = ["sh", "-c", 'ulimit -n "$(ulimit -Hn)"; exec pgbouncer -d "$0"',
               str(self.tmp / "pgbouncer.ini")]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pgbouncer failed: {result.stderr.strip()}")
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.console_dsn(), autocommit=True).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.tmp is None:
            return
        with contextlib.suppress(OSError, ValueError):
            pid = self.pid
            os.kill(pid, signal.SIGINT)  # immediate shutdown
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self) -> LocalBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
