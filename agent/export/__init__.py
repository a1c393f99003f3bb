"""Export: OpenTelemetry instruments over the latest points, OTLP push and Prometheus pull."""
