"""OpenTelemetry export: the OTLP exporter from config and OTEL_* variables, pushed periodically."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from .. import __version__
from ..config import Config, OtlpConfig
from ..errors import ConfigError
from .producer import Producer
from .state import MetricsState

log = logging.getLogger(__name__)
WARN_EVERY_S = 60.0


def otlp_enabled(otlp: OtlpConfig) -> bool:
    """Config first, then ``OTEL_METRICS_EXPORTER``; otherwise on when an endpoint is set."""
    if otlp.enabled is not None:
        return otlp.enabled
    exporters = os.environ.get("OTEL_METRICS_EXPORTER", "")
    if exporters:
        return "otlp" in [e.strip() for e in exporters.split(",")]
    return bool(otlp.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def otlp_protocol(otlp: OtlpConfig) -> str:
    protocol = (otlp.protocol or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    if protocol not in ("grpc", "http/protobuf"):
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: expected 'grpc' or 'http/protobuf', "
                          f"found {protocol!r}")
    return protocol


def otlp_exporter(otlp: OtlpConfig) -> MetricExporter:
    """The OTLP exporter; whatever the config leaves unset the exporter reads from OTEL_*."""
    headers = dict(otlp.headers) if otlp.headers else None
    if otlp_protocol(otlp) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )
        credentials = None
        if otlp.certificate:
            import grpc

            credentials = grpc.ssl_channel_credentials(otlp.certificate.read_bytes())
        return GrpcExporter(endpoint=otlp.endpoint, insecure=otlp.insecure,
                            credentials=credentials, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )
    endpoint = otlp.endpoint
    if endpoint and not endpoint.rstrip("/").endswith("/v1/metrics"):
        endpoint = endpoint.rstrip("/") + "/v1/metrics"
    certificate = (str(otlp.certificate) if otlp.certificate
                   else os.environ.get("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE")
                   or os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE"))
    return HttpExporter(endpoint=endpoint, headers=headers, certificate_file=certificate,
                        session=_certificate_first_session() if certificate else None)


def _certificate_first_session() -> Any:
    """A requests session whose own ``verify`` (the configured CA file) wins.

    Plain requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` override a session's
    ``verify``, so with either set the configured collector CA would be ignored.
    """
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                       cert: Any) -> Any:
            return super().merge_environment_settings(
                url, proxies, stream, self.verify if verify is None else verify, cert)

    return Session()


class QuietExporter(MetricExporter):
    """Wraps an exporter: a failing collector costs one warning a minute, never a traceback."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.failures = 0
        self._last_warning = 0.0
        for name in ("opentelemetry.exporter.otlp.proto.grpc.exporter",
                     "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                     "opentelemetry.exporter.otlp.proto.grpc.metric_exporter"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as exc:  # an exporter bug must not kill the export thread
            log.debug("exporter raised", exc_info=exc)
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.FAILURE:
            self.failures += 1
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_S:
                self._last_warning = now
                log.warning("OTLP export failing", extra={"failures": self.failures})
        elif self.failures:
            log.info("OTLP export recovered", extra={"failures": self.failures})
            self.failures = 0
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


class PeriodicExport:
    """Pushes the producer's data to an exporter every interval from its own thread.

    The interval and timeout come from the config or ``OTEL_METRIC_EXPORT_INTERVAL`` /
    ``OTEL_METRIC_EXPORT_TIMEOUT`` (milliseconds; the specification's defaults, 60 s and 30 s).
    ``shutdown`` makes one last export, then shuts the exporter down.
    """

    def __init__(self, exporter: MetricExporter, producer: Producer,
                 interval_s: float | None = None) -> None:
        self.exporter = exporter
        self.producer = producer
        self.interval_s = interval_s or _env_millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000) / 1000
        self.timeout_ms = _env_millis("OTEL_METRIC_EXPORT_TIMEOUT", 30_000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.export()

    def export(self) -> None:
        try:
            self.exporter.export(self.producer.get_metrics_data(), timeout_millis=self.timeout_ms)
        except Exception:  # the export thread must outlive any exporter bug
            log.exception("OTLP export raised")

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.timeout_ms = min(self.timeout_ms, timeout_s * 1000)
        self.export()
        self.exporter.shutdown(timeout_millis=timeout_s * 1000)


def _env_millis(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}: expected milliseconds, found {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name}: expected milliseconds > 0, found {raw!r}")
    return value


@dataclass
class Telemetry:
    """The producer (read by /metrics and by the push) and the OTLP push, if on."""

    producer: Producer
    push: PeriodicExport | None

    def start(self) -> None:
        if self.push:
            self.push.start()

    def shutdown(self) -> None:
        if self.push:
            self.push.shutdown()


INSTANCE_NAMESPACE = uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320")
"""The namespace the semantic conventions give for name-based ``service.instance.id`` UUIDs."""


def instance_id(config: Config) -> str:
    """A ``service.instance.id`` stable across restarts of the same agent on the same host.

    A UUID v5 (as the semantic conventions recommend) of the host name and what tells two
    agents on one host apart: their config file and listen address. Prometheus' OTLP ingestion
    turns it into the ``instance`` label, so a random id would start new series at each restart.
    """
    seed = f"{socket.gethostname()}|{config.source}|{config.listen or ''}"
    return str(uuid.uuid5(INSTANCE_NAMESPACE, seed))


def resource(config: Config) -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; service.name defaults to ours and
    service.instance.id to ``instance_id``."""
    detected = Resource.create({"service.version": __version__})
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": "pgconn-agent"}))
    if "service.instance.id" not in OTELResourceDetector().detect().attributes:
        # The SDK's own default is a random UUID v4 per process: new series at every restart.
        detected = detected.merge(Resource({"service.instance.id": instance_id(config)}))
    return detected


def build(config: Config, state: MetricsState, producer: Producer | None = None) -> Telemetry:
    """The producer over ``state`` and the OTLP push (if enabled). A reload passes the running
    producer: the resource (``service.instance.id``) stays the process's own."""
    producer = producer or Producer(state, resource(config))
    push = None
    if otlp_enabled(config.otlp):
        preference = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "")
        if preference and preference.lower() != "cumulative":
            log.warning("only cumulative temporality is exported",
                        extra={"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": preference})
        push = PeriodicExport(QuietExporter(otlp_exporter(config.otlp)), producer,
                              config.otlp.export_interval)
    return Telemetry(producer, push)
