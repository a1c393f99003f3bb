"""The agent's small HTTP server: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``.

``/metrics`` converts the producer's OpenTelemetry data to the contract's Prometheus names
(exactly what Prometheus' OTLP translation yields) in the text exposition format (text.py).

The listener is bounded: one event-loop thread holds every connection (a few KB each) while it
waits for a request head, with a deadline and a cap that evicts the oldest idle connection; only
complete requests reach a fixed pool of worker threads. Idle or half-sent connections therefore
cost neither threads nor much memory, and every error goes through the logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..webconfig import Authenticator, WebConfig
from .producer import Producer
from .text import render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """How much the listener gives any client; defaults suit a few scrapers and probes."""

    workers: int = 4
    """Threads answering requests; more requests queue (each holds only its connection)."""
    max_connections: int = 256
    """Open connections; beyond it the oldest one waiting for a request is closed."""
    head_timeout: float = 10.0
    """Seconds for a new connection (TLS handshake included) to send its whole request head."""
    idle_timeout: float = 90.0
    """Seconds a kept-alive connection may wait for its next request (Go clients' default)."""
    write_timeout: float = 30.0
    max_head_bytes: int = 16384


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    version: str
    headers: Mapping[str, str]
    """Header names lower-cased."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Route = Callable[[Request], Response]


class _BadRequest(Exception):
    """A request the listener answers itself (with ``response``) and then hangs up on."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.response = Response(status, (why + "\n").encode())


def routes(reader: Producer | None, ready: Callable[[], tuple[bool, str]]
           ) -> dict[str, Route]:
    """The endpoints by path; add one here (or to ``AgentHTTPServer.routes``) to serve it."""
    table: dict[str, Route] = {
        "/healthz": lambda _: Response(200, b"ok\n"),
        "/readyz": lambda _: _readiness(ready),
    }
    if reader is not None:
        table["/metrics"] = lambda _: Response(200, render(reader), CONTENT_TYPE_LATEST)
    return table


def _readiness(ready: Callable[[], tuple[bool, str]]) -> Response:
    ok, why = ready()
    return Response(200 if ok else 503, (why + "\n").encode())


class AgentHTTPServer:
    """Serves in a daemon thread; ``ready`` is a callable the daemon supplies for ``/readyz``."""

    def __init__(self, listen: str, reader: Producer | None,
                 ready: Callable[[], tuple[bool, str]], web: WebConfig | None = None,
                 limits: Limits | None = None) -> None:
        host, _, port = listen.rpartition(":")
        self.routes = routes(reader, ready)
        self.limits = limits or Limits()
        self.web = web or WebConfig()
        self.auth = Authenticator(self.web.users) if self.web.users else None
        host = host.strip("[]") or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, int(port)), family=family, backlog=1024)
        self.workers = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http-worker")
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_log_loop_error)
        self.thread = threading.Thread(target=self._serve_forever, name="http", daemon=True)
        self._open: dict[asyncio.StreamWriter, asyncio.Task[Any] | None] = {}
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        """Connections waiting for a request head, oldest first: the ones evicted at the cap."""
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host!s}:{port}"

    def start(self) -> None:
        started = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        self.thread.start()
        started.result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, sock=self.sock, ssl=self.web.ssl_context,
            ssl_handshake_timeout=self.limits.head_timeout if self.web.ssl_context else None,
            limit=self.limits.max_head_bytes)

    def _serve_forever(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()
        self.sock.close()
        self.workers.shutdown(wait=False, cancel_futures=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        tasks = [t for t in self._open.values() if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    # -- connections

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self.limits.max_connections:
            if not self._waiting:
                writer.transport.abort()
                return
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
        self._open[writer] = asyncio.current_task()
        try:
            await self._requests(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away, was too slow or broke TLS: nothing to answer
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            self._open.pop(writer, None)
            self._waiting.pop(writer, None)
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        timeout = self.limits.head_timeout
        while True:
            self._waiting[writer] = None
            try:
                request = _parse(await _read_head(reader, timeout))
            except _BadRequest as exc:
                await self._write(writer, exc.response, keep=False, head_only=False)
                return
            finally:
                self._waiting.pop(writer, None)
            response = await self.loop.run_in_executor(self.workers, self._answer, request)
            keep = _keep_alive(request)
            await self._write(writer, response, keep=keep, head_only=request.method == "HEAD")
            if not keep:
                return
            timeout = self.limits.idle_timeout

    async def _write(self, writer: asyncio.StreamWriter, response: Response, *, keep: bool,
                     head_only: bool) -> None:
        try:
            writer.write(_serialize(response, keep=keep, head_only=head_only))
            await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
        except OSError as exc:  # reset, broken pipe, timeout, TLS error
            log.debug("HTTP response not delivered: the client went away",
                      extra={"error": type(exc).__name__})
            raise

    def _answer(self, request: Request) -> Response:
        """Runs on a worker thread: authentication (bcrypt is slow) and the route itself."""
        if self.auth is not None and not self.auth.allows(request.headers.get("authorization")):
            return Response(401, b"unauthorized\n",
                            headers=(("WWW-Authenticate", 'Basic realm="pgconn-agent"'),))
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=(("Allow", "GET, HEAD"),))
        route = self.routes.get(request.path)
        if route is None:
            return Response(404, f"not found: try {', '.join(sorted(self.routes))}\n"
                            .encode())
        try:
            return route(request)
        except Exception:
            log.exception("HTTP handler failed", extra={"path": request.path})
            return Response(500, b"internal error (see the agent's log)\n")


async def _read_head(reader: asyncio.StreamReader, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, "request head too large") from None


def _parse(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "bad header line")
        headers[name.lower()] = value.strip()
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise _BadRequest(400, "request bodies are not accepted")
    path, _, query = parts[1].partition("?")
    return Request(parts[0], path, query, parts[2], headers)


def _keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    return request.version == "HTTP/1.1" and connection != "close"


def _serialize(response: Response, *, keep: bool, head_only: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
             f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}",
             "Server: pgconn-agent",
             f"Connection: {'keep-alive' if keep else 'close'}",
             *(f"{k}: {v}" for k, v in response.headers)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own errors (e.g. a failed TLS handshake) as one log line, not a traceback."""
    exc = context.get("exception")
    log.debug("HTTP connection error", extra={"detail": context.get("message"),
                                               "error": type(exc).__name__ if exc else None})
