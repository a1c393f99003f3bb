"""A connection error is one line that keeps libpq's cause, never the password."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from psycopg import conninfo

from agent.collect.client import TargetClient
from agent.config import Target
from agent.errors import TargetError


@contextlib.contextmanager
def hanging_up_server() -> Iterator[int]:
    """A TCP port whose server accepts each connection and closes it at once."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def test_a_dropped_connection_keeps_the_cause_on_one_line() -> None:
    with hanging_up_server() as port:
        dsn = conninfo.make_conninfo("", host="127.0.0.1", port=port, user="u",
                                     password="hunter2", dbname="d", sslmode="disable")
        client = TargetClient(Target(name="t", dsn=dsn))
        with pytest.raises(TargetError) as info:
            client.poll()
    message = str(info.value)
    assert info.value.kind == "connect"
    assert "\n" not in message and "\t" not in message
    # libpq's cause, not just its last line ("before or while processing the request.").
    assert "server closed the connection unexpectedly" in message, message
    assert message.endswith("before or while processing the request.")
    assert "hunter2" not in message
