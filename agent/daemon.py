"""The daemon: schedules one poll job per target and wires collect -> aggregate -> export.

Signal handlers only set events; the main thread reloads (SIGHUP) or stops (SIGTERM/SIGINT)
between waits. Stopping aborts the polls in flight (their connections are dropped), waits for
them at most ``STOP_WAIT_S``, and flushes one last export: the process ends within seconds
whatever a target does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from . import config as cfg
from . import logs, webconfig
from .aggregate.attribution import Attribution
from .aggregate.history import History, open_rate_points
from .aggregate.points import PointSet, points
from .aggregate.pooler import pooler_points
from .collect import catch
from .collect.client import CONNECT_TIMEOUT_S, POLL_DEADLINE_S, TargetClient
from .collect.pgbouncer import is_pgbouncer
from .collect.pgbouncer.board import PoolerBoard
from .collect.pgbouncer.console import ConsoleClient
from .collect.snapshot import Snapshot
from .diagnose.findings import diagnose, unreachable
from .diagnose.holders import busy_holder
from .diagnose.remote import EXIT_HEADER, respond
from .diagnose.render import Report
from .errors import AgentError, ConfigError, PollAborted, TargetError
from .export import otel
from .export.http import AgentHTTPServer, Request, Response
from .export.state import MetricsState
from .pipeline import observe, record_poll
from .servers import Servers
from .shard import mine
from .spec import PollError
from .targets_dir import Watch, report

log = logging.getLogger(__name__)
BACKOFF_CAP_S = 60.0
STOP_WAIT_S = 2.0
POLL_BOUND_S = CONNECT_TIMEOUT_S + POLL_DEADLINE_S
"""The longest a poll lasts: a connect attempt, then statements under the client deadline."""
STALE_GRACE_S = 5.0
"""Published data is current for two intervals plus this (a busy scheduler, a slow healthy
poll); after that the next poll is overdue and the target's data is dropped, ``up`` reads 0."""
RATE_WINDOW_S = 60.0
"""The exported per-holder connection rate covers the last minute of the history."""


class TargetRunner:
    """Polls one target (through the poll its server shares); failures back off exponentially
    (capped) before reconnecting."""

    def __init__(self, target: cfg.Target, config: cfg.Config, state: MetricsState,
                 poolers: PoolerBoard | None = None, servers: Servers | None = None) -> None:
        self.target = target
        self.config = config
        self.state = state
        self.poolers = poolers or PoolerBoard()
        self.servers = servers or Servers()
        self.history = History(max_holders=config.max_groups)
        self.latest: tuple[Attribution, dict[int, str]] | None = None
        self.history_lock = threading.Lock()
        # A PgBouncer is polled alone; PostgreSQL targets share their server's poll, whose
        # points, history and diagnosis its lead's runner computes.
        self.console = ConsoleClient(target) if is_pgbouncer(target.dsn) else None
        self.server = None if self.console else self.servers.join(
            target, config, self._publish, self._record, self._points)
        self.failures = 0
        self.next_attempt = 0.0
        self.last_attempt: float | None = None
        self.alive_at = time.monotonic()  # a poll called or ended (or the runner created)
        self.last_error: str | None = None
        self.last_kind: str = PollError.CONNECT
        self.idle = threading.Event()
        self.idle.set()
        self.closed = False
        state.claim(target.name, self)

    def poll(self) -> None:
        now = self.alive_at = time.monotonic()
        if now < self.next_attempt:
            return
        self.idle.clear()
        try:
            self._attempt()
        finally:
            self.alive_at = time.monotonic()
            self.idle.set()

    def _attempt(self) -> None:
        start = time.perf_counter()
        try:
            if self.server is not None:
                self.server.poll(self.target)
            else:
                self._publish(self._pooler_points())
        except PollAborted:
            return  # removed or stopping: nothing to report
        except TargetError as exc:
            self._failed(exc.kind, str(exc))
        except AgentError as exc:
            self._failed(PollError.CONNECT, f"target {self.target.name}: {exc}")
        except Exception as exc:  # a bug in one poll must not stop the target's schedule
            log.exception("poll crashed", extra={"target": self.target.name})
            self._failed(PollError.QUERY, f"target {self.target.name}: {type(exc).__name__}")
        else:
            if self.failures:
                log.info("target recovered", extra={"target": self.target.name,
                                                    "failures": self.failures})
            self.failures, self.next_attempt, self.last_error = 0, 0.0, None
        finally:
            # Set when the attempt ends: /readyz turns 200 once there is something to scrape.
            self.last_attempt = time.monotonic()
        if self.server is None:  # a server poll's time is recorded by the server
            self._record(time.perf_counter() - start)

    def _publish(self, share: PointSet) -> None:
        # Current until the next poll is overdue (see STALE_GRACE_S).
        self.state.publish(self.target.name, share, owner=self,
                           fresh_for=2 * self.target.interval + STALE_GRACE_S)

    def _record(self, seconds: float) -> None:
        self.state.record_duration(self.target.name, seconds, owner=self)

    def _pooler_points(self) -> PointSet:
        assert self.console is not None
        pooled = self.console.poll()
        if not self.closed:  # a removed target's late poll joins nothing
            self.poolers.put(pooled)
        return pooler_points(pooled, max_groups=self.config.max_groups)

    def _points(self, snapshot: Snapshot, client: TargetClient) -> PointSet:
        observed = observe(snapshot, self.target, self.config, self.poolers.latest())
        snapshot, attribution = observed.snapshot, observed.attribution
        with self.history_lock:
            self.latest = attribution, {s.pid: s.query for s in snapshot.sessions
                                        if s.query is not None}
        caught = record_poll(self.history, attribution, client, self.config,
                             catch.budget(self.target.interval), self.history_lock)
        with self.history_lock:
            churns = self.history.churn(RATE_WINDOW_S)
        client.statements = busy_holder(attribution, self.config.thresholds)
        point_set = points(attribution, max_groups=self.config.max_groups,
                           caught=((b.application_name, b.client_addr) for b in caught))
        rates = open_rate_points(churns, self.target.name, self.config.dimensions)
        return PointSet({**point_set.points, **rates},
                        point_set.opened)

    def report(self) -> Report:
        """The diagnosis from the latest poll and the history (no new connection)."""
        with self.history_lock:
            if self.latest is None:
                return Report(self.target.name, None, (unreachable(
                    self.target.name, self.last_kind, self.last_error or "no poll yet"),))
            a, queries = self.latest
            found = diagnose(a, self.config.thresholds, self.history)
            seconds = self.history.seconds()
        if self.last_error is not None:
            found.insert(0, unreachable(self.target.name, self.last_kind, self.last_error))
        return Report(self.target.name, a, tuple(found), queries, observed=seconds)

    def _failed(self, kind: str, message: str) -> None:
        self.last_kind = kind
        self.poolers.drop(self.target.name)
        self.state.fail(self.target.name, kind, owner=self)
        self.failures += 1
        delay = min(BACKOFF_CAP_S, 2.0 ** (self.failures - 1))
        self.next_attempt = time.monotonic() + delay * random.uniform(0.8, 1.0)
        if self.failures == 1 or message != self.last_error or self.failures % 10 == 0:
            log.warning("poll failed", extra={"target": self.target.name, "error": kind,
                                              "detail": message, "failures": self.failures,
                                              "retry_in_s": round(delay, 1)})
        self.last_error = message

    def close(self) -> None:
        self.closed = True
        self.poolers.drop(self.target.name)
        if self.console is not None:
            self.console.close()
        else:
            self.servers.leave(self.target)


class Daemon:
    def __init__(self, config_path: Path | None, overrides: Mapping[str, Any]) -> None:
        self.config_path = config_path
        self.overrides = dict(overrides)
        self.config = cfg.load(config_path, overrides)
        if not self.config.targets and self.config.targets_dir is None:
            raise ConfigError(f"{self.config.source}: targets: no target configured "
                              f"(give --dsn or [[targets]])")
        self.state = MetricsState(self.config.max_groups)
        self.telemetry = otel.build(self.config, self.state)
        self.runners: dict[str, TargetRunner] = {}
        self.poolers = PoolerBoard()
        self.servers = Servers()
        self.watch = Watch(self.config.targets_dir)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=32)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        self.scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self.skips: dict[str, int] = {}
        self.http: AgentHTTPServer | None = None
        self.web: webconfig.WebConfig | None = None
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()

    def _skipped(self, event: JobExecutionEvent) -> None:
        self.state.skipped(event.job_id)
        n = self.skips[event.job_id] = self.skips.get(event.job_id, 0) + 1
        if n == 1 or n % 100 == 0:
            log.warning("poll skipped: the previous poll of the target is still running",
                        extra={"target": event.job_id, "skipped": n})

    def ready(self) -> tuple[bool, str]:
        """Ready once a target had a poll attempt, while every target's schedule runs: each
        is due every interval (a tick, even while backing off) and an attempt lasts at most
        ``POLL_BOUND_S``. A down target is ``up 0``, never unreadiness."""
        now = time.monotonic()
        late = [n for n, r in self.runners.items()
                if now - r.alive_at
                > 3 * r.target.interval + (0 if r.idle.is_set() else POLL_BOUND_S)]
        pending = [n for n, r in self.runners.items() if r.last_attempt is None]
        if late:
            return False, f"not polled recently: {', '.join(late)}"
        if self.runners and len(pending) == len(self.runners):
            return False, "no poll yet"
        return True, "ok"

    def _diagnose(self, request: Request) -> Response:
        """``GET /diagnose``: every server's diagnosis from what the daemon already holds, under
        its lead target (PgBouncer targets have no sessions to diagnose)."""
        reports = [r.report() for r in list(self.runners.values())
                   if r.server is not None and r.server.lead() == r.target.name]
        status, body, ctype, exit_status = respond(reports, request.query)
        return Response(status, body, ctype, ((EXIT_HEADER, str(exit_status)),))

    def _schedule(self, target: cfg.Target) -> None:
        runner = TargetRunner(target, self.config, self.state, self.poolers, self.servers)
        self.runners[target.name] = runner
        jitter = min(target.interval * 0.1, 2.0)
        self.scheduler.add_job(runner.poll, "interval", seconds=target.interval,
                               jitter=jitter, id=target.name, name=target.name,
                               next_run_time=_now_plus(random.uniform(0, jitter)))

    def _unschedule(self, name: str) -> None:
        self.scheduler.remove_job(name)
        self.state.remove(name)  # first: a poll in flight then publishes nothing
        self.runners.pop(name).close()
        self.skips.pop(name, None)

    def _start_http(self, listen: str | None, web: webconfig.WebConfig | None) -> None:
        if listen:
            self.http = AgentHTTPServer(listen, self.telemetry.producer, self.ready, web)
            self.http.routes["/diagnose"] = self._diagnose
            self.http.start()
        self.web = web

    def _apply_listener(self, new: cfg.Config) -> cfg.Config:
        """Move the listener to a new address, and re-read a web config file (its
        certificates too) on every reload; a file or an address that fails keeps the running
        listener."""
        old = self.config
        if (new.listen, new.web_config_file) == (old.listen, None):
            return new
        kept = dataclasses.replace(new, listen=old.listen, web_config_file=old.web_config_file)
        try:
            web = _web_config(new)
        except AgentError as exc:
            log.error("web config rejected, keeping the running listener",
                      extra={"error": str(exc)})
            return kept
        running = self.web
        if self.http:
            self.http.stop()
            self.http = None
        try:
            self._start_http(new.listen, web)
        except OSError as exc:
            log.error("cannot serve on the new address, keeping the old one",
                      extra={"listen": new.listen, "error": exc.strerror or str(exc)})
            self._start_http(old.listen, running)
            return kept
        log.info("listening", extra={"listen": self.http.address if self.http else None})
        return new

    def _apply(self, new: cfg.Config) -> cfg.Config:
        """Apply the settings outside the targets: logging, OTLP export, the HTTP listener.

        Returns the configuration in effect: rejected OTLP or listener settings are logged and
        the running ones kept.
        """
        old = self.config
        if (new.log_format, new.log_level) != (old.log_format, old.log_level):
            logs.setup(new.log_format, new.log_level)
        if new.otlp != old.otlp:
            try:
                telemetry = otel.build(new, self.state, self.telemetry.producer)
            except AgentError as exc:
                log.error("OTLP settings rejected, keeping the running export",
                          extra={"error": str(exc)})
                new = dataclasses.replace(new, otlp=old.otlp)
            else:
                self.telemetry.shutdown()
                self.telemetry = telemetry
                self.telemetry.start()
        return self._apply_listener(new)

    def reload(self) -> None:
        try:
            new = cfg.load(self.config_path, self.overrides)
            if not new.targets and new.targets_dir is None:
                raise ConfigError(f"{new.source}: targets: no target configured")
        except AgentError as exc:
            log.error("reload rejected, keeping the running configuration",
                      extra={"error": str(exc)})
            return
        new = self._apply(new)
        self.watch.reset(new.targets_dir)
        report(new)
        old_targets = {name: runner.target for name, runner in self.runners.items()}
        new_targets = {t.name: t for t in mine(new.targets, new.shard)}
        same_rules = ((new.dimensions, new.max_groups, new.client_processes)
                      == (self.config.dimensions, self.config.max_groups,
                          self.config.client_processes))
        if new.max_groups != self.config.max_groups:
            self.state.set_max_groups(new.max_groups)
        self.config = new
        for name, target in old_targets.items():
            if new_targets.get(name) != target or not same_rules:
                self._unschedule(name)
        for name, target in new_targets.items():
            if name not in self.runners:
                self._schedule(target)
        log.info("configuration reloaded", extra={"targets": sorted(new_targets)})

    def run(self, on_started: Callable[[Daemon], None] | None = None) -> int:
        self._start_http(self.config.listen, _web_config(self.config))
        report(self.config)
        for target in mine(self.config.targets, self.config.shard):
            self._schedule(target)
        self.scheduler.start()
        self.telemetry.start()
        log.info("started", extra={"targets": sorted(self.runners), "shard": self.config.shard,
                                   "listen": self.http.address if self.http else None,
                                   "otlp": otel.otlp_enabled(self.config.otlp)})
        if on_started:
            on_started(self)
        try:
            while not self.stop_event.is_set():
                self.stop_event.wait(0.5)
                if self.reload_event.is_set() or self.watch.changed():
                    self.reload_event.clear()
                    self.reload()
        finally:
            self.shutdown()
        return 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())

    def shutdown(self) -> None:
        log.info("stopping")
        self.scheduler.shutdown(wait=False)
        for runner in self.runners.values():
            runner.close()  # aborts a poll in flight
        deadline = time.monotonic() + STOP_WAIT_S
        for runner in self.runners.values():
            runner.idle.wait(max(0.0, deadline - time.monotonic()))
        self.telemetry.shutdown()
        if self.http:
            self.http.stop()

    def exit(self, code: int) -> NoReturn:
        """Exit; a poll that ignored its abort (stuck outside libpq, e.g. resolving a host
        name) must not hold the process, whose thread pool would wait for it at exit."""
        stuck = [n for n, r in self.runners.items() if not r.idle.is_set()]
        if stuck:
            log.warning("exiting with polls still running", extra={"targets": stuck})
            logging.shutdown()
            os._exit(code)
        sys.exit(code)


def _web_config(config: cfg.Config) -> webconfig.WebConfig | None:
    return webconfig.load(config.web_config_file) if config.web_config_file else None


def _now_plus(seconds: float) -> Any:
    from datetime import datetime, timedelta

    return datetime.now().astimezone() + timedelta(seconds=seconds)
