"""pgconn-agent: who holds your PostgreSQL connections."""

__version__ = "0.1.0"
