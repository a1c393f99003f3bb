"""Grafana dashboards for pgconn-agent, built as code from the metric contract."""
