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

So a timer thread fires at the deadline: it sends a cancel request (libpq >= 17's non-blocking
cancel, bounded by ``CANCEL_TIMEOUT_S``), then ``shutdown(2)``s the connection's socket. The
descriptor stays valid (it is not closed), so the poll thread's wait wakes at once with
end-of-file and psycopg raises; the connection is then broken and the poll thread closes it.
The poll thread disarms the deadline (waiting for a firing one to finish) before it touches the
connection again, so the two threads never use the connection at the same time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from types import TracebackType
from typing import Any

import psycopg

log = logging.getLogger(__name__)
CANCEL_TIMEOUT_S = 1.0


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
        self._timer = threading.Timer(seconds, self._expire_late)
        self._timer.daemon = True
        self._timer.name = "poll-deadline"

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:  # waits for a firing deadline to finish with the connection
            self._disarmed = True

    @property
    def fired(self) -> bool:
        return self.timed_out or self.aborted

    def _expire_late(self) -> None:
        with self._lock:
            if self._disarmed or self.fired:
                return
            self.timed_out = True
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


def _shut_down(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down without closing its descriptor (see the module)."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (psycopg.Error, OSError) as exc:
        log.debug("socket shutdown failed", extra={"error": str(exc)})
