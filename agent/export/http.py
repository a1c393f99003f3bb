"""The agent's small HTTP server: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``.

``/metrics`` converts the producer's OpenTelemetry data to the contract's Prometheus names
(exactly what Prometheus' OTLP translation yields) with prometheus_client's exposition code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import contract as c
from .producer import Producer

log = logging.getLogger(__name__)


class ContractCollector:
    """A prometheus_client collector over the producer's OpenTelemetry data."""

    def __init__(self, reader: Producer) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        for rm in self.reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    spec = c.BY_NAME.get(metric.name)
                    if spec is not None:
                        yield from _families(spec, metric.data.data_points)


def _families(spec: c.MetricSpec, points: Any) -> Iterator[Metric]:
    name = spec.prometheus_name
    labels = list(_label_names(points))
    family: Metric
    if spec.instrument is c.Instrument.HISTOGRAM:
        family = HistogramMetricFamily(name, spec.description, labels=labels)
        for p in points:
            assert isinstance(p, HistogramDataPoint)
            buckets, running = [], 0
            for bound, n in zip((*p.explicit_bounds, float("inf")), p.bucket_counts,
                                strict=True):
                running += n
                buckets.append((_bound(bound), float(running)))
            family.add_metric(_values(labels, p), buckets, p.sum)
        yield family
        return
    if spec.instrument is c.Instrument.COUNTER:
        family = CounterMetricFamily(name.removesuffix("_total"), spec.description,
                                     labels=labels)
    else:
        family = GaugeMetricFamily(name, spec.description, labels=labels)
    for p in points:
        assert isinstance(p, NumberDataPoint)
        family.add_metric(_values(labels, p), float(p.value))
    yield family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _label_names(points: Any) -> Iterator[str]:
    seen: dict[str, None] = {}
    for p in points:
        for key in p.attributes or {}:
            seen.setdefault(key, None)
    return iter(seen)


def _values(labels: list[str], point: Any) -> list[str]:
    attrs = point.attributes or {}
    return [str(attrs.get(k, "")) for k in labels]


class AgentHTTPServer:
    """Serves in a daemon thread; ``ready`` is a callable the daemon supplies for ``/readyz``."""

    def __init__(self, listen: str, reader: Producer | None,
                 ready: Callable[[], tuple[bool, str]],
                 diagnose: Callable[[str], tuple[int, bytes, str, int]] | None = None) -> None:
        host, _, port = listen.rpartition(":")
        registry = CollectorRegistry(auto_describe=False)
        if reader is not None:
            registry.register(ContractCollector(reader))
        handler = _handler(registry if reader is not None else None, ready, diagnose)
        self.server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="http",
                                       daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(registry: CollectorRegistry | None, ready: Callable[[], tuple[bool, str]],
             diagnose: Callable[[str], tuple[int, bytes, str, int]] | None = None
             ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pgconn-agent"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and registry is not None:
                try:
                    body = generate_latest(registry)
                except Exception:
                    log.exception("metrics collection failed")
                    self._send(500, b"collection failed\n")
                    return
                self._send(200, body, CONTENT_TYPE_LATEST)
            elif path == "/diagnose" and diagnose is not None:
                code, body, ctype, exit_status = diagnose(self.path.partition("?")[2])
                self._send(code, body, ctype, {"X-Pgconn-Agent-Exit": str(exit_status)})
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ok, why = ready()
                self._send(200 if ok else 503, (why + "\n").encode())
            else:
                self._send(404, b"not found: try /metrics, /diagnose, /healthz, /readyz\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes are not worth a log line

    return Handler
