"""``pgconn-agent demo`` and what it runs: a throwaway PostgreSQL (``server``) and client
sessions on it (``workload``).

The server and the workload ship in the runtime package only because the demo runs them; the
tests and benchmarks reuse them (tests/conftest.py, benchmarks/*.py) instead of keeping a
second copy, so they also carry what only tests use (other server versions, restarts, churn).
Harness the demo does not run (a throwaway PgBouncer, Prometheus, OTLP receiver) lives under
tests/.
"""
