"""A client-side deadline for the statements of one poll: cancel the statement, drop the socket.

Why this design, of the ones psycopg 3 allows:

- ``statement_timeout`` runs on the server: a stopped, frozen or partitioned server never
  enforces it. TCP keepalives and ``tcp_user_timeout`` (set too, see ``client``) catch a dead
  peer or network, but the kernel of a stopped backend still ACKs, so they never fire.
- ``Connection.cancel_safe(timeout=)`` alone asks the postmaster to signal the backend; a
  stopped backend does not act on it, and the poll keeps waiting for an answer.
- ``Connection.close()`` from another thread frees the libpq connection (``PQfinish``) while the
  poll thread is inside libpq with it: a use-after-free, not a timeout.
- An ``AsyncConnection`` under ``asyncio.timeout`` would turn the whole collect path into
  coroutines for one feature, and on cancellation psycopg itself waits again for the server.

So at the deadline a thread sends a cancel request (libpq >= 17's non-blocking cancel, bounded
by ``CANCEL_TIMEOUT_S``; with an older libpq, whose cancel blocks unbounded, none is sent), then
``shutdown(2)``s the connection's socket. The descriptor stays valid (it is not closed), so the
poll thread's wait wakes at once with end-of-file and psycopg raises; the connection is then
broken and the poll thread closes it.
The poll thread disarms the deadline (waiting for a firing one to finish) before it touches the
connection again, so the two threads never use the connection at the same time. One watchdog
thread keeps every armed deadline (arming costs a heap push, not a thread per poll); a thread
is started only for a deadline that fires.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

import psycopg

from ..errors import PollAborted, TargetError

log = logging.getLogger(__name__)
CANCEL_TIMEOUT_S = 1.0
R = TypeVar("R")
C = TypeVar("C", bound="psycopg.Connection[Any]")


class Guarded(Generic[C]):
    """One target's connection: polls run on it under a deadline, and ``close`` may come from
    any thread (a removal, a stop) while a poll is in flight: it aborts that poll."""

    def __init__(self, target: str, seconds: float) -> None:
        self.target = target
        self.seconds = seconds
        self.conn: C | None = None
        self._busy = threading.Lock()
        self._closing = False
        self._armed: Deadline | None = None

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    @contextlib.contextmanager
    def polling(self) -> Iterator[None]:
        """Hold the connection for one poll; a closed holder refuses, and cleans up after."""
        with self._busy:
            try:
                if self._closing:
                    raise PollAborted(f"target {self.target}: closed")
                yield
            finally:
                if self._closing:
                    self.drop()

    def run(self, work: Callable[[C], R], classify: Callable[[Exception], TargetError],
            catch: tuple[type[Exception], ...] = (psycopg.Error,)) -> R:
        """``work(conn)`` under the deadline; a late, aborted or broken call drops the
        connection (the next poll reconnects)."""
        conn = self.conn
        assert conn is not None
        deadline = Deadline(conn, self.seconds)
        self._armed = deadline
        try:
            with deadline:
                if self._closing:
                    deadline.expire()
                result = work(conn)
        except catch as exc:
            error = classify(exc)
            if conn.broken or error.kind == "connect" or deadline.fired:
                self.drop()
            raise self._fired(deadline) or error from None
        finally:
            self._armed = None
        failure = self._fired(deadline)
        if failure:  # the answer came as the deadline fired: the socket is gone
            self.drop()
            raise failure
        return result

    def _fired(self, deadline: Deadline) -> Exception | None:
        if deadline.aborted:
            return PollAborted(f"target {self.target}: aborted")
        if deadline.timed_out:
            return TargetError("timeout", f"target {self.target}: timeout: no answer within "
                                          f"{self.seconds:g} s; statement cancelled, "
                                          f"connection dropped")
        return None

    def close(self) -> None:
        """Drop the connection; a poll in flight is aborted and drops it when it returns."""
        self._closing = True
        armed = self._armed
        if armed is not None:
            armed.expire()
        if self._busy.acquire(blocking=False):
            try:
                self.drop()
            finally:
                self._busy.release()

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Deadline:
    """Arm with ``with``; ``expire()`` fires it early (an abort: no cancel request, no wait).

    ``timed_out`` / ``aborted`` tell the poll thread, after the block, why its call failed.
    """

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.timed_out = False
        self.aborted = False
        self._lock = threading.Lock()
        self._disarmed = False

    def __enter__(self) -> Deadline:
        _WATCHDOG.arm(time.monotonic() + self.seconds, self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:  # waits for a firing deadline to finish with the connection
            self._disarmed = True

    @property
    def fired(self) -> bool:
        return self.timed_out or self.aborted

    @property
    def disarmed(self) -> bool:
        return self._disarmed

    def expire_late(self) -> None:
        """The deadline passed: cancel the statement, then drop the socket."""
        with self._lock:
            if self._disarmed or self.fired:
                return
            self.timed_out = True
            if psycopg.capabilities.has_cancel_safe():
                try:
                    self.conn.cancel_safe(timeout=CANCEL_TIMEOUT_S)
                except (psycopg.Error, OSError) as exc:
                    log.debug("cancel request failed", extra={"error": str(exc)})
            _shut_down(self.conn)

    def expire(self) -> None:
        """Abort now from another thread: drop the socket; the server's statement_timeout
        ends the statement (a stop or a removal must not wait for a cancel round trip)."""
        with self._lock:
            if self._disarmed or self.fired:
                return
            self.aborted = True
            _shut_down(self.conn)


class _Watchdog:
    """One daemon thread that fires due deadlines, each in a thread of its own (a cancel
    request may take up to ``CANCEL_TIMEOUT_S``; other deadlines must not wait for it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, at: float, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._due, (at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="poll-deadlines",
                                                daemon=True)
                self._thread.start()
            elif self._due[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, deadline = heapq.heappop(self._due)
            if not deadline.disarmed:
                threading.Thread(target=deadline.expire_late, name="poll-deadline",
                                 daemon=True).start()


_WATCHDOG = _Watchdog()


def _shut_down(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down without closing its descriptor (see the module)."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (psycopg.Error, OSError) as exc:
        log.debug("socket shutdown failed", extra={"error": str(exc)})
