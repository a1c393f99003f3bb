"""Collect: SQL on one read-only connection per target into a typed, immutable snapshot."""
