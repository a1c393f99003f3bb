"""The HTTP listener is bounded: 1,000 idle or half-sent connections cost no threads and little
memory, a scrape still answers promptly, slow clients are cut off, and an aborted scrape is a
log line, never a raw traceback.

The agent is the real process against a real server; the connections are real sockets.
About 25 s (most of it waiting for the listener's 10 s request deadline).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from agent_e2e import Agent, wait_until
from process_stats import proc_stats

from agent.demo.server import LocalServer
from agent.export.http import AgentHTTPServer, Limits, Request, Response

CONNECTIONS = 1000
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: agent\r\n"  # the blank line never comes


def host_port(agent: Agent) -> tuple[str, int]:
    assert agent.listen
    host, _, port = agent.listen.rpartition(":")
    return host, int(port)


@contextlib.contextmanager
def hostile_sockets(address: tuple[str, int], n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections: half send nothing, half send half a request head."""
    socks = []
    try:
        for i in range(n):
            sock = socket.create_connection(address, timeout=5)
            if i % 2:
                sock.sendall(HALF_REQUEST)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def timed_scrape(agent: Agent) -> float:
    start = time.perf_counter()
    assert "pgconn_agent_up" in agent.metrics()
    return time.perf_counter() - start


def closed_by_server(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionError:
        return True


def test_a_thousand_idle_connections_cost_no_threads_and_little_memory(
        e2e_server: LocalServer) -> None:
    with Agent(["--dsn", e2e_server.dsn(), "--listen", "127.0.0.1:0", "--interval", "1"]) \
            as agent:
        agent.started()
        wait_until(lambda: agent.value("pgconn_agent_up") == 1, what="a first poll")
        for _ in range(5):  # warm up: workers started, first scrapes' allocations done
            timed_scrape(agent)
        before = proc_stats(agent.proc.pid)
        with hostile_sockets(host_port(agent), CONNECTIONS) as socks:
            time.sleep(1.0)
            during = proc_stats(agent.proc.pid)
            latencies = [timed_scrape(agent) for _ in range(5)]
            print(f"\nthreads {before.threads} -> {during.threads}, RSS {before.rss_kb} -> "
                  f"{during.rss_kb} KiB, fds {before.fds} -> {during.fds}; scrape latency "
                  f"max {max(latencies) * 1000:.1f} ms under {CONNECTIONS} idle connections")
            assert during.threads <= before.threads + 1, (before, during)
            assert during.rss_kb - before.rss_kb < 16 * 1024, (before, during)
            assert max(latencies) < 1.0, latencies
            # Beyond the connection cap the oldest idle ones are closed at once; the rest at
            # the request deadline (10 s): none is held open forever.
            wait_until(lambda: all(closed_by_server(s) for s in socks), timeout=20,
                       what="the server to close every idle connection", every=0.5)
        after = proc_stats(agent.proc.pid)
        print(f"after the deadline: threads {after.threads}, RSS {after.rss_kb} KiB, "
              f"fds {after.fds}")
        assert after.fds <= before.fds + 2, (before, after)
        assert timed_scrape(agent) < 1.0


def aborted_scrape(address: tuple[str, int]) -> None:
    """A scrape whose client resets the connection before the answer (SO_LINGER 0 -> RST)."""
    sock = socket.create_connection(address, timeout=5)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_aborted_and_malformed_requests_are_logged_not_tracebacks(
        e2e_server: LocalServer) -> None:
    with Agent(["--dsn", e2e_server.dsn(), "--listen", "127.0.0.1:0", "--interval", "1",
                "--log-level", "debug"]) as agent:
        agent.started()
        wait_until(lambda: agent.value("pgconn_agent_up") == 1, what="a first poll")
        address = host_port(agent)
        for _ in range(100):
            aborted_scrape(address)
        assert timed_scrape(agent) < 1.0
        assert "Traceback" not in agent.stderr()
        for garbage in (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
                        b"GET\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 4000 + b"\r\n"):
            with socket.create_connection(address, timeout=5) as sock:
                sock.sendall(garbage)
                assert sock.recv(100).startswith((b"HTTP/1.1 400", b"HTTP/1.1 431"))
        assert timed_scrape(agent) < 1.0
        agent.stop()
        lines = agent.stderr().splitlines()
        assert "Traceback" not in agent.stderr()
        for line in lines:
            json.loads(line)  # every line the agent wrote is a JSON log record


def _boom(_: Request) -> Response:
    """A handler that raises, as a bug in one would."""
    raise ZeroDivisionError("boom")


@pytest.fixture
def small_server() -> Iterator[AgentHTTPServer]:
    server = AgentHTTPServer("127.0.0.1:0", None, lambda: (True, "ok"),
                             limits=Limits(max_connections=8))
    server.routes["/boom"] = _boom
    server.routes["/echo"] = lambda r: Response(200, r.query.encode())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_protocol_keep_alive_head_methods_and_routes(small_server: AgentHTTPServer) -> None:
    host, _, port = small_server.address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    for query in ("a=1", "b=2"):  # one kept-alive connection, two requests
        conn.request("GET", f"/echo?{query}")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, query.encode())
    conn.request("HEAD", "/healthz")
    resp = conn.getresponse()
    assert (resp.status, resp.read(), resp.headers["Content-Length"]) == (200, b"", "3")
    conn.request("POST", "/healthz")
    resp = conn.getresponse()
    assert (resp.status, resp.headers["Allow"]) == (405, "GET, HEAD")
    resp.read()
    conn.request("GET", "/nope")
    resp = conn.getresponse()
    assert resp.status == 404
    assert b"/healthz" in resp.read()
    conn.request("GET", "/boom")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (500, b"internal error (see the agent's log)\n")


def test_cap_evicts_the_oldest_idle_connection(small_server: AgentHTTPServer) -> None:
    host, _, port = small_server.address.rpartition(":")
    with hostile_sockets((host, int(port)), 8) as socks:
        time.sleep(0.3)
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        assert wait_until(lambda: closed_by_server(socks[0]), timeout=5, what="eviction")
        assert not any(closed_by_server(s) for s in socks[2:])
