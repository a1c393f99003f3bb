"""The reference Prometheus exposition: prometheus_client's own families and ``generate_latest``
over the producer's data, as ``/metrics`` was written before ``agent/export/text.py``.

The tests compare the agent's direct encoder with it byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from agent import contract as c
from agent.export.producer import Producer


def reference(producer: Producer) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ContractCollector(producer))
    return generate_latest(registry)


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
