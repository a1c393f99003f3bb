"""Hand-built snapshots for the pure steps; every field gets a distinct value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.collect.part import discover
from agent.collect.snapshot import (
    ActivityGroup,
    BackendTypeCount,
    ConnectionLimit,
    DatabaseSessions,
    LockWait,
    Session,
    Setting,
    Snapshot,
    WaitCount,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def group(app: str = "shop-web", state: str = "idle", count: int = 1, *, addr: str = "10.0.0.5",
          db: str = "shop", user: str = "shop_app", state_age: float | None = 30.0,
          xact_age: float | None = None, opened: int = 0, young: int = 0) -> ActivityGroup:
    return ActivityGroup(db, user, app, addr, state, count, state_age, xact_age, opened, young)


def session(pid: int, *, app: str = "shop-web", state: str = "active", addr: str = "10.0.0.5",
            blocking: tuple[int, ...] = (), state_age: float = 5.0, xact_age: float = 6.0,
            wait: str | None = None, locks: int = 2) -> Session:
    return Session(pid=pid, datname="shop", usename="shop_app", application_name=app,
                   client_addr=addr, client_hostname=None, backend_type="client backend",
                   state=state, backend_start=NOW, xact_start=NOW, query_start=NOW,
                   state_change=NOW, wait_event_type="Lock" if blocking else None,
                   wait_event=wait or ("transactionid" if blocking else None),
                   blocking_pids=blocking, state_age=state_age, xact_age=xact_age,
                   locks_held=locks)


SETTINGS = (Setting("max_connections", 100, ""), Setting("superuser_reserved_connections", 3, ""),
            Setting("idle_in_transaction_session_timeout", 60, "s"),
            Setting("statement_timeout", 30, "s"))


FIELDS = frozenset(("target", "taken_at", "server_version_num", "churn_window", "host"))


def snapshot(groups: list[ActivityGroup], **kw: Any) -> Snapshot:
    """A snapshot of these groups; other keywords are Snapshot fields or parts' rows by part
    name."""
    fields: dict[str, Any] = {"target": "db1", "taken_at": NOW, "server_version_num": 150004}
    parts: dict[str, Any] = {
        "settings": SETTINGS, "activity_groups": tuple(groups),
        "backend_types": (BackendTypeCount("client backend", sum(g.count for g in groups)),
                          BackendTypeCount("checkpointer", 1)),
        "waits": (), "sessions": (), "lock_waits": (), "limits": (), "databases": (),
    }
    names = {p.name for p in discover()}
    for key, value in kw.items():
        assert key in FIELDS | names, f"{key}: neither a Snapshot field nor a part"
        (fields if key in FIELDS else parts)[key] = value
    return Snapshot(**fields, parts=parts)


__all__ = ["ConnectionLimit", "DatabaseSessions", "LockWait", "WaitCount", "group", "session",
           "snapshot"]
