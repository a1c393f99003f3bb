"""A Python process holding N psycopg connections (DSN from argv) until stdin closes."""

from __future__ import annotations

import sys

import psycopg

conns = [psycopg.connect(sys.argv[1]) for _ in range(int(sys.argv[2]))]
print("ready", flush=True)
sys.stdin.read()
for conn in conns:
    conn.close()
