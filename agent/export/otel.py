"""OpenTelemetry wiring: one observable instrument per contract metric, OTLP and pull readers."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Histogram, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from .. import __version__
from .. import contract as c
from ..config import Config, OtlpConfig
from ..errors import ConfigError
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
            import grpc  # type: ignore[import-untyped]

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
                     "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
                     "opentelemetry.sdk.metrics._internal.export"):
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


@dataclass
class Telemetry:
    provider: MeterProvider
    pull: InMemoryMetricReader | None
    poll_duration: Histogram

    def shutdown(self) -> None:
        self.provider.force_flush(5_000)
        self.provider.shutdown(5_000)


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; service.name defaults to ours."""
    detected = Resource.create({"service.version": __version__})
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": "pgconn-agent"}))
    return detected


def _callback(state: MetricsState, name: str
              ) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, dict(attrs)) for attrs, value in state.observe(name)]
    return observe


def build(config: Config, state: MetricsState, *, pull: bool) -> Telemetry:
    """A MeterProvider with the contract's instruments, OTLP (if enabled) and a pull reader."""
    readers: list[MetricReader] = []
    if otlp_enabled(config.otlp):
        interval = (config.otlp.export_interval * 1000 if config.otlp.export_interval
                    else None)
        readers.append(PeriodicExportingMetricReader(
            QuietExporter(otlp_exporter(config.otlp)), export_interval_millis=interval))
    pull_reader = InMemoryMetricReader() if pull else None
    if pull_reader is not None:
        readers.append(pull_reader)
    resource = _resource()
    views: Sequence[View] = (View(instrument_name=c.POLL_DURATION.name,
                                  aggregation=ExplicitBucketHistogramAggregation(
                                      c.POLL_DURATION_BUCKETS)),)
    # Observations made in callbacks carry no trace context: exemplars would only cost CPU.
    provider = MeterProvider(metric_readers=readers, resource=resource, views=views,
                             exemplar_filter=AlwaysOffExemplarFilter())
    meter = provider.get_meter("pgconn-agent", __version__)
    histogram = None
    for spec in c.METRICS:
        if spec.instrument is c.Instrument.HISTOGRAM:
            histogram = meter.create_histogram(spec.name, unit=spec.unit,
                                               description=spec.description)
        elif spec.instrument is c.Instrument.COUNTER:
            meter.create_observable_counter(spec.name, [_callback(state, spec.name)],
                                            unit=spec.unit, description=spec.description)
        else:
            meter.create_observable_gauge(spec.name, [_callback(state, spec.name)],
                                          unit=spec.unit, description=spec.description)
    assert histogram is not None
    return Telemetry(provider, pull_reader, histogram)
