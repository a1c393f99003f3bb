"""Reproducible client workloads on a real server: idle, idle in transaction, lock chains.

Connections are asynchronous psycopg connections driven by one event loop in a background
thread, so thousands are cheap to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo

R = TypeVar("R")
LOCK_TABLE = "pgconn_workload_lock"
_IN_FLIGHT = 50


class Workload:
    """Holds client sessions until ``close()``; ``dsn`` is a superuser DSN of the server.

    ``via`` picks the client side: ``"tcp"`` (client_addr 127.0.0.1) or a unix-socket DSN given
    as ``unix_dsn`` (client_addr "local").
    """

    def __init__(self, dsn: str, unix_dsn: str | None = None) -> None:
        self._dsns = {"tcp": dsn, "unix": unix_dsn or dsn}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="workload")
        self._thread.start()
        self._conns: list[psycopg.AsyncConnection[Any]] = []
        self._tasks: list[asyncio.Future[Any]] = []
        self._sem = asyncio.Semaphore(_IN_FLIGHT)

    def _run(self, coro: Coroutine[Any, Any, R], timeout: float = 120) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open(self, app: str, via: str, user: str | None, dbname: str | None
                    ) -> psycopg.AsyncConnection[Any]:
        extra: dict[str, Any] = {"application_name": app}
        if user:
            extra["user"] = user
        if dbname:
            extra["dbname"] = dbname
        async with self._sem:
            conn = await psycopg.AsyncConnection.connect(
                conninfo.make_conninfo(self._dsns[via], **extra), autocommit=True)
        self._conns.append(conn)
        return conn

    def _many(self, n: int, app: str, via: str, user: str | None, dbname: str | None,
              begin: bool) -> list[int]:
        async def one() -> int:
            conn = await self._open(app, via, user, dbname)
            if begin:
                await conn.execute("BEGIN")
                await conn.execute("SELECT 1")
            return conn.info.backend_pid

        async def all_() -> list[int]:
            return list(await asyncio.gather(*(one() for _ in range(n))))

        return self._run(all_())

    def idle(self, n: int, app: str, *, via: str = "tcp", user: str | None = None,
             dbname: str | None = None) -> list[int]:
        """Open ``n`` sessions that stay idle; returns their pids."""
        return self._many(n, app, via, user, dbname, begin=False)

    def fill(self, app: str, *, via: str = "tcp", user: str | None = None,
             dbname: str | None = None, limit: int = 10000) -> tuple[int, str]:
        """Open idle sessions one at a time until the server refuses one, the way an
        application's pool grows into the limit; returns (sessions opened, the refusal)."""
        async def until_refused() -> tuple[int, str]:
            for opened in range(limit):
                try:
                    await self._open(app, via, user, dbname)
                except psycopg.OperationalError as exc:
                    return opened, str(exc).strip().splitlines()[-1]
            raise RuntimeError(f"the server accepted {limit} sessions without refusing one")

        return self._run(until_refused())

    def named(self, names: list[str], *, via: str = "tcp") -> list[int]:
        """Open one idle session per application_name in ``names`` (cardinality storms)."""
        async def all_() -> list[int]:
            conns = await asyncio.gather(*(self._open(n, via, None, None) for n in names))
            return [c.info.backend_pid for c in conns]

        return self._run(all_(), timeout=300)

    def close_oldest(self, n: int) -> None:
        """Close the ``n`` sessions opened first (churn)."""
        gone, self._conns = self._conns[:n], self._conns[n:]
        self._run(_close(gone))

    def churn(self, app: str, per_second: float, *, query_seconds: float = 0.03,
              via: str = "tcp", dbname: str | None = None) -> None:
        """Until ``close()``: connect, run one short query, disconnect, ``per_second`` times a
        second (a client without a pool, or a reconnect loop)."""
        dsn = conninfo.make_conninfo(self._dsns[via], application_name=app,
                                     **({"dbname": dbname} if dbname else {}))

        async def one() -> None:
            with contextlib.suppress(psycopg.Error):
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute("SELECT pg_sleep(%s)", (query_seconds,))

        async def loop() -> None:
            start, n, pending = time.monotonic(), 0, set[asyncio.Future[None]]()
            try:
                while True:
                    n += 1
                    task = asyncio.ensure_future(one())
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    await asyncio.sleep(max(0.0, start + n / per_second - time.monotonic()))
            finally:
                for child in list(pending):
                    child.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

        async def spawn() -> None:
            self._tasks.append(asyncio.ensure_future(loop()))

        self._run(spawn())

    def busy(self, n: int, app: str, *, pause: float = 0.05, via: str = "tcp",
             sql: str = "SELECT count(*) FROM pg_class", idle_in_transaction: float = 0.0
             ) -> None:
        """Until ``close()``: ``n`` sessions of a healthy pool, each running a short query
        (``sql``) every ``pause`` seconds; with ``idle_in_transaction``, inside a transaction
        that stays open that long after the query (work between queries, an await). Never
        prepared, so it runs through a transaction-mode PgBouncer too."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            with contextlib.suppress(psycopg.Error):
                while True:
                    if idle_in_transaction:
                        async with conn.transaction():
                            await conn.execute(sql.encode(), prepare=False)
                            await asyncio.sleep(idle_in_transaction)
                    else:
                        await conn.execute(sql.encode(), prepare=False)
                    await asyncio.sleep(pause)

        async def start() -> None:
            conns = await asyncio.gather(*(self._open(app, via, None, None) for _ in range(n)))
            self._tasks.extend(asyncio.ensure_future(work(c)) for c in conns)

        self._run(start())

    def __len__(self) -> int:
        return len(self._conns)

    def idle_in_transaction(self, n: int, app: str, *, via: str = "tcp",
                            user: str | None = None, dbname: str | None = None) -> list[int]:
        """Open ``n`` sessions that each begin a transaction and leave it open."""
        return self._many(n, app, via, user, dbname, begin=True)

    def lock_chain(self, app: str, waiters: int, *, via: str = "tcp", row: int = 1,
                   waiter_app: str | None = None, user: str | None = None,
                   dbname: str | None = None, timeout: float = 30) -> tuple[int, list[int]]:
        """A session holds a row lock idle in transaction; ``waiters`` sessions queue behind it.

        Returns (root blocker pid, waiter pids) once every waiter is waiting on a Lock.
        """
        async def chain() -> tuple[int, list[int]]:
            holder = await self._open(app, via, user, dbname)
            await holder.execute(f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} "
                                 f"(id int PRIMARY KEY, v int)")
            await holder.execute(f"INSERT INTO {LOCK_TABLE} VALUES (%s, 0) "
                                 f"ON CONFLICT DO NOTHING", (row,))
            await holder.execute("BEGIN")
            await holder.execute(f"UPDATE {LOCK_TABLE} SET v = v + 1 WHERE id = %s", (row,))
            pids = []
            for _ in range(waiters):
                conn = await self._open(waiter_app or app, via, user, dbname)
                pids.append(conn.info.backend_pid)
                self._tasks.append(asyncio.ensure_future(self._blocked_update(conn, row)))
            return holder.info.backend_pid, pids

        holder_pid, pids = self._run(chain())
        self.wait_for_lock_waiters(pids, timeout)
        return holder_pid, pids

    @staticmethod
    async def _blocked_update(conn: psycopg.AsyncConnection[Any], row: int) -> None:
        with contextlib.suppress(psycopg.Error):
            await conn.execute(f"UPDATE {LOCK_TABLE} SET v = v + 1 WHERE id = %s", (row,))

    def wait_for_lock_waiters(self, pids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        dsn = self._dsns["unix"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) "
                                   "AND wait_event_type = 'Lock'", (pids,)).fetchone()
                if row and row[0] == len(pids):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {row[0] if row else 0} of {len(pids)} "
                                       f"sessions are waiting on a lock")
                time.sleep(0.05)

    def close(self) -> None:
        async def close_all() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await _close(self._conns)
            self._conns.clear()
            self._tasks.clear()

        try:
            self._run(close_all(), timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _close(conns: list[psycopg.AsyncConnection[Any]]) -> None:
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
