"""An in-test OTLP metrics receiver: gRPC and HTTP/protobuf, built from opentelemetry-proto.

Both variants keep every ``ExportMetricsServiceRequest`` they receive (with the request's gRPC
metadata or HTTP headers) and answer what a collector would. Helpers read the latest value of a
metric with given attributes. ``down()`` / ``up()`` stop and restart the listener on the same
port, so tests can simulate a collector that goes away and comes back.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from certificates import issue_cert, make_ca
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as pb_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def any_value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class Received:
    """One export call: the decoded request and its metadata (lower-cased header names)."""

    request: pb.ExportMetricsServiceRequest
    headers: Mapping[str, str]
    at: float

    def metrics(self) -> Iterator[tuple[dict[str, Any], metrics_pb2.ScopeMetrics,
                                        metrics_pb2.Metric]]:
        """(resource attributes, scope metrics, metric) for every metric of the request."""
        for rm in self.request.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    yield resource, sm, metric


def data_points(metric: metrics_pb2.Metric) -> Any:
    kind = metric.WhichOneof("data")
    if kind is None:
        return []
    return getattr(metric, kind).data_points


def number(point: Any) -> float:
    """The value of a NumberDataPoint; a HistogramDataPoint gives its count."""
    if isinstance(point, metrics_pb2.HistogramDataPoint):
        return float(point.count)
    kind = point.WhichOneof("value")
    return float(getattr(point, kind))


def matches(point: Any, match: Mapping[str, Any]) -> bool:
    attrs = attributes(point.attributes)
    return all(attrs.get(k) == v for k, v in match.items())


class _Store:
    """Thread-safe, bounded list of received requests, with waiting helpers."""

    def __init__(self, keep: int = 1000) -> None:
        self._cond = threading.Condition()
        self._received: deque[Received] = deque(maxlen=keep)
        self.total = 0

    def add(self, request: pb.ExportMetricsServiceRequest, headers: Mapping[str, str]) -> None:
        with self._cond:
            self._received.append(Received(request, dict(headers), time.monotonic()))
            self.total += 1
            self._cond.notify_all()

    @property
    def received(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def clear(self) -> None:
        with self._cond:
            self._received.clear()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0,
                 what: str = "condition") -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every export); returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"OTLP receiver: timed out after {timeout}s waiting for "
                                       f"{what}; {self.total} requests received")
                self._cond.wait(min(left, 0.25))

    def wait_requests(self, n: int, timeout: float = 15.0) -> None:
        start = self.total
        self.wait_for(lambda: self.total >= start + n, timeout, f"{n} more requests")

    # -- reading --------------------------------------------------------------------------

    def latest_metric(self, name: str) -> tuple[Received, dict[str, Any],
                                                metrics_pb2.Metric] | None:
        """The newest received instance of a metric, with its request and resource."""
        for rec in reversed(self.received):
            found = None
            for resource, _sm, metric in rec.metrics():
                if metric.name == name:
                    found = (rec, resource, metric)
            if found:
                return found
        return None

    def latest_points(self, name: str, /, **match: Any) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of the newest instance of ``name`` whose attributes
        include ``match``; empty if the metric has not arrived."""
        found = self.latest_metric(name)
        if found is None:
            return []
        return [(attributes(p.attributes), p) for p in data_points(found[2])
                if matches(p, match)]

    def latest_value(self, name: str, /, **match: Any) -> float | None:
        """The value of the one point of the newest ``name`` matching ``match`` (None if
        there is none; an error if several match)."""
        points = self.latest_points(name, **match)
        if not points:
            return None
        if len(points) > 1:
            raise AssertionError(f"{name}: {len(points)} points match {match}: "
                                 f"{[a for a, _ in points]}")
        return number(points[0][1])

    def latest_sum(self, name: str, /, **match: Any) -> float:
        return sum(number(p) for _, p in self.latest_points(name, **match))


@dataclass(frozen=True)
class PrivateCA:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> PrivateCA:
        ca = make_ca(directory, "pgconn-agent-test-ca")
        cert, key = issue_cert(ca, directory, "server")
        return cls(ca.cert, cert, key)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())])

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


class GrpcReceiver(_Store):
    """OTLP/gRPC on 127.0.0.1; ``server_credentials`` turns on TLS (pass
    ``grpc.ssl_server_credentials(...)`` built from a test CA)."""

    protocol = "grpc"

    def __init__(self, *, server_credentials: grpc.ServerCredentials | None = None,
                 port: int = 0, keep: int = 1000) -> None:
        super().__init__(keep)
        self._credentials = server_credentials
        self.port = port
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self._credentials else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def up(self) -> GrpcReceiver:
        store = self

        class Servicer(pb_grpc.MetricsServiceServicer):
            def Export(self, request: pb.ExportMetricsServiceRequest,
                       context: grpc.ServicerContext) -> pb.ExportMetricsServiceResponse:
                store.add(request, {k.lower(): v for k, v in context.invocation_metadata()
                                    if isinstance(v, str)})
                return pb.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        # The generated service module has no annotations (opentelemetry-proto ships no stubs).
        pb_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            Servicer(), server)
        address = f"127.0.0.1:{self.port}"
        if self._credentials is not None:
            port = server.add_secure_port(address, self._credentials)
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"gRPC receiver: cannot bind {address}")
        server.start()
        self.port, self._server = port, server
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def __enter__(self) -> GrpcReceiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


class _ReusableHTTPServer(ThreadingHTTPServer):
    """Remembers its open connections, so ``close_all()`` really takes the endpoint down
    (keep-alive connections would otherwise go on being served after ``server_close()``)."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()


class HttpReceiver(_Store):
    """OTLP/HTTP with protobuf bodies: ``POST /v1/metrics`` on 127.0.0.1."""

    protocol = "http/protobuf"

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        super().__init__()
        self.port = port
        self._ssl = ssl_context
        self._server: _ReusableHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def up(self) -> HttpReceiver:
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != "/v1/metrics":
                    self._reply(404, b"")
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                request = pb.ExportMetricsServiceRequest()
                try:
                    request.ParseFromString(body)
                except Exception:
                    self._reply(400, b"")
                    return
                store.add(request, {k.lower(): v for k, v in self.headers.items()})
                self._reply(200, pb.ExportMetricsServiceResponse().SerializeToString())

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = _ReusableHTTPServer(("127.0.0.1", self.port), Handler)
        if self._ssl is not None:
            server.socket = self._ssl.wrap_socket(server.socket, server_side=True)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="otlp-http",
                                        daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_all()
            self._server = None

    def __enter__(self) -> HttpReceiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


Receiver = GrpcReceiver | HttpReceiver


def agent_env(receiver: Receiver, interval_ms: int, **more: str) -> dict[str, str]:
    """The standard ``OTEL_*`` variables that point an agent at ``receiver``, exporting every
    ``interval_ms``; ``more`` adds variables (e.g. ``OTEL_EXPORTER_OTLP_TIMEOUT``)."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": receiver.protocol,
            "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms), **more}
