"""Targets that reach one PostgreSQL server share one connection and one poll of it.

Every view the agent reads (pg_stat_activity, pg_locks, pg_stat_database, pg_settings) is
server-wide, so polling it once per target costs the server N polls and N connections and, before
the split, exported N copies. A ``SharedServer`` holds the connection of its lead target (the
first by name), polls once per round of its members' turns, whoever asks first, and publishes
every member's share (``aggregate.fleet.split``); the poll's duration is recorded once, under
the lead.
Two groups that turn out to reach the same server (found by
``pg_control_system().system_identifier``, e.g. ``localhost`` and ``127.0.0.1``) still poll
separately, but only one of them (its lead first by name) exports server-wide series.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo

from . import config as cfg
from .aggregate.fleet import split
from .aggregate.points import PointSet
from .collect.client import POLL_DEADLINE_S, TargetClient, classify, connection_string
from .collect.deadline import Guarded
from .collect.snapshot import Snapshot
from .errors import AgentError, TargetError
from .pipeline import server_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Member:
    """A target of the server and where its share and the poll's duration go (its runner)."""

    target: cfg.Target
    publish: Callable[[PointSet], None]
    record: Callable[[float], None]
    to_points: Callable[[Snapshot, TargetClient], PointSet]
    """The lead's turns the server's snapshot into points (and keeps its history)."""


def _first(value: object) -> str:
    return str(value or "").split(",")[0]


def server_key(target: cfg.Target) -> str:
    """Which server a target reaches, before connecting: its ``server`` setting, else
    ``host:port`` from the DSN with libpq's defaults (unix sockets as ``local:DIR:PORT``)."""
    if target.server:
        return target.server
    params = conninfo.conninfo_to_dict(target.dsn)
    host = _first(params.get("host")) or _first(params.get("hostaddr")) \
        or _first(os.environ.get("PGHOST"))
    port = _first(params.get("port")) or _first(os.environ.get("PGPORT")) or "5432"
    if not host or host.startswith("/"):
        return f"local:{host or '/var/run/postgresql'}:{port}"
    return f"{host.lower()}:{port}"


def database_of(target: cfg.Target) -> str:
    """The database a target names, with libpq's defaults (PGDATABASE, then the user name)."""
    params = conninfo.conninfo_to_dict(target.dsn)
    return str(params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user")
               or os.environ.get("PGUSER") or getpass.getuser())


def system_identifier(target: cfg.Target) -> str | None:
    """``sysid:<pg_control_system().system_identifier>`` (executable by PUBLIC by default),
    ``""`` where the role may not run it (then host:port stands in), None when reading failed
    (tried again on the next poll). Bounded like a poll: connect timeout, then the deadline."""
    guard: Guarded[psycopg.Connection[Any]] = Guarded(target.name, POLL_DEADLINE_S)
    try:
        guard.conn = psycopg.connect(connection_string(target), autocommit=True)
        with guard.polling():
            row = guard.run(lambda c: c.execute(
                "SELECT system_identifier FROM pg_control_system()").fetchone(),
                lambda exc: classify(exc, target.name))
    except TargetError as exc:
        if exc.kind == "query":  # no EXECUTE on pg_control_system()
            log.info("server identity not readable, using host:port",
                     extra={"target": target.name})
            return ""
        return None
    except (psycopg.Error, OSError, AgentError):
        return None
    finally:
        guard.close()
    return f"sysid:{row[0]}" if row else ""


class Directory:
    """Groups of targets by server identity: the group whose lead comes first by name exports
    the server-wide series, and each leaves the databases of the others to them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}

    def claim(self, identity: str, group: str, lead: str, databases: frozenset[str]
              ) -> tuple[bool, frozenset[str]]:
        """(whether ``group`` owns the server-wide series, the other groups' databases)."""
        with self._lock:
            groups = self._groups.setdefault(identity, {})
            groups[group] = (lead, databases)
            others = frozenset().union(*(d for g, (_, d) in groups.items() if g != group))
            return min(groups.items(), key=lambda kv: kv[1][0])[0] == group, others

    def release(self, group: str) -> None:
        with self._lock:
            for groups in self._groups.values():
                groups.pop(group, None)


class SharedServer:
    """One server's connection, its members and the last poll's outcome."""

    def __init__(self, key: str, config: cfg.Config, directory: Directory) -> None:
        self.key = key
        self.config = config
        self.directory = directory
        self.members: dict[str, Member] = {}
        self._members_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._client: TargetClient | None = None
        self._identity: str | None = None
        self._polled_at = -float("inf")
        self._closed = False
        self._turns: dict[str, float] = {}
        """When each member last asked for a poll."""
        self._error: TargetError | None = None

    def join(self, member: Member) -> None:
        with self._members_lock:
            self.members[member.target.name] = member

    def leave(self, name: str) -> bool:
        """Drop a member; True when the server has none left: then its connection is closed (a
        poll in flight is aborted)."""
        with self._members_lock:
            self.members.pop(name, None)
            self._turns.pop(name, None)
            empty = not self.members
        if empty:
            self._closed = True
            self._close()
            self.directory.release(self.key)
        return empty

    def lead(self) -> str | None:
        """The member whose connection settings the poll uses: the first by name."""
        with self._members_lock:
            return min(self.members, default=None)

    def poll(self, target: cfg.Target) -> None:
        """Poll the server for ``target``, unless another member's poll since ``target``'s
        previous turn (and within its interval) already served it, or one is running; that
        poll's failure is raised again for every member it served."""
        now = time.monotonic()
        with self._members_lock:
            previous = self._turns.get(target.name, -float("inf"))
            self._turns[target.name] = now
        if not self._poll_lock.acquire(blocking=False):
            return  # another member's poll is running and publishes this target's share too
        try:
            if previous < self._polled_at and now - self._polled_at < target.interval:
                if self._error is not None:
                    raise self._error
                return
            self._polled_at = now
            try:
                self._poll()
            except TargetError as exc:
                self._error = exc
                self._identity = None  # a failover may bring another server behind the name
                raise
            self._error = None
        finally:
            self._poll_lock.release()

    def _poll(self) -> None:
        with self._members_lock:
            members = dict(self.members)
        if not members:
            return
        lead = members[min(members)].target
        client = self._client
        if client is None or client.target != lead:
            self._close()
            client = self._client = server_client(lead, self.config,
                                                  show_queries=self.config.show_queries)
        start = time.perf_counter()
        try:
            snapshot = client.poll()
        finally:
            if self._closed:  # every member left while this poll ran
                self._close()
            members[lead.name].record(time.perf_counter() - start)
        if self._identity is None:
            self._identity = system_identifier(lead)
        databases = {name: database_of(m.target) for name, m in members.items()}
        owner, elsewhere = self.directory.claim(self._identity or self.key, self.key, lead.name,
                                                frozenset(databases.values()))
        shares = split(members[lead.name].to_points(snapshot, client), databases,
                       server_wide=owner, elsewhere=elsewhere)
        with self._members_lock:
            for name, share in shares.items():
                member = self.members.get(name)
                if member is not None:
                    member.publish(share)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class Servers:
    """The daemon's servers by ``server_key``: targets join on schedule, leave on removal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[str, SharedServer] = {}
        self.directory = Directory()

    def join(self, target: cfg.Target, config: cfg.Config, publish: Callable[[PointSet], None],
             record: Callable[[float], None],
             to_points: Callable[[Snapshot, TargetClient], PointSet]) -> SharedServer:
        key = server_key(target)
        with self._lock:
            server = self._servers.get(key)
            if server is None:
                server = self._servers[key] = SharedServer(key, config, self.directory)
            server.join(Member(target, publish, record, to_points))
            return server

    def leave(self, target: cfg.Target) -> None:
        key = server_key(target)
        with self._lock:
            server = self._servers.get(key)
            if server is not None and server.leave(target.name):
                del self._servers[key]
