"""Typed, immutable snapshot of one poll: each part's rows by part name (see ``part``), with
typed access to the core parts the aggregation and the diagnosis read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .parts import activity_groups as _groups
from .parts import client_ports as _client_ports
from .parts import databases as _databases
from .parts import limits as _limits
from .parts import lock_waits as _lock_waits
from .parts import sessions as _sessions
from .parts import settings as _settings
from .parts import statements as _statements
from .parts import waits as _waits
from .parts.activity_groups import CHURN_WINDOW_S, ActivityGroup
from .parts.backend_types import BackendTypeCount
from .parts.client_ports import ClientPort
from .parts.databases import DatabaseSessions
from .parts.limits import ConnectionLimit
from .parts.lock_waits import LockWait
from .parts.sessions import Session
from .parts.settings import Setting
from .parts.statements import ActiveStatements, TopStatement
from .parts.waits import WaitCount
from .processes import HostProcesses


class PartRows:
    """Typed rows of the parts that both a Snapshot and an Attribution (which keeps the
    snapshot's ``parts``) give to their readers."""

    __slots__ = ()
    parts: Mapping[str, tuple[Any, ...]]

    @property
    def settings(self) -> tuple[Setting, ...]:
        return _settings.PART.of(self)

    @property
    def limits(self) -> tuple[ConnectionLimit, ...]:
        return _limits.PART.of(self)

    @property
    def databases(self) -> tuple[DatabaseSessions, ...]:
        return _databases.PART.of(self)

    @property
    def statements(self) -> tuple[ActiveStatements, ...]:
        return _statements.PART.of(self)

    def setting(self, name: str) -> float | None:
        return next((s.value for s in self.settings if s.name == name), None)


@dataclass(frozen=True, slots=True)
class Snapshot(PartRows):
    """Everything one poll read, taken inside one read-only transaction."""

    target: str
    taken_at: datetime
    server_version_num: int
    parts: Mapping[str, tuple[Any, ...]]
    """Each part's rows by part name; a part the server lacks is absent."""
    churn_window: float = CHURN_WINDOW_S
    host: HostProcesses | None = None
    """The local processes owning ``client_ports``' sockets (None: attribution off)."""

    @property
    def groups(self) -> tuple[ActivityGroup, ...]:
        return _groups.PART.of(self)

    @property
    def waits(self) -> tuple[WaitCount, ...]:
        return _waits.PART.of(self)

    @property
    def sessions(self) -> tuple[Session, ...]:
        return _sessions.PART.of(self)

    @property
    def lock_waits(self) -> tuple[LockWait, ...]:
        return _lock_waits.PART.of(self)

    @property
    def client_ports(self) -> tuple[ClientPort, ...]:
        return _client_ports.PART.of(self)



__all__ = ["ActiveStatements", "ActivityGroup", "BackendTypeCount", "ClientPort",
           "ConnectionLimit", "DatabaseSessions", "LockWait", "Session", "Setting", "Snapshot",
           "TopStatement", "WaitCount"]
