"""Aggregate: pure functions from a Snapshot to attribution and metric points, capped."""
