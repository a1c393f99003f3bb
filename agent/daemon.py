"""The daemon: schedules one poll job per target and wires collect -> aggregate -> export.

Signal handlers only set events; the main thread reloads (SIGHUP) or stops (SIGTERM/SIGINT)
between waits, and the shutdown path flushes one last export.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from . import config as cfg
from . import webconfig
from .aggregate.attribution import attribute
from .aggregate.join import pairings_for, relabel
from .aggregate.points import PointSet, points
from .aggregate.pooler import pooler_points
from .collect.pgbouncer import is_pgbouncer
from .collect.pgbouncer.board import PoolerBoard
from .collect.pgbouncer.console import ConsoleClient
from .collect.snapshot import Snapshot
from .errors import AgentError, ConfigError, TargetError
from .export import otel
from .export.http import AgentHTTPServer
from .export.state import MetricsState
from .servers import Servers
from .shard import mine
from .targets_dir import Watch, report

log = logging.getLogger(__name__)
BACKOFF_CAP_S = 60.0


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
        # A PgBouncer is polled alone; PostgreSQL targets share their server's poll.
        self.console = ConsoleClient(target) if is_pgbouncer(target.dsn) else None
        self.server = None if self.console else self.servers.join(target, config)
        self.failures = 0
        self.next_attempt = 0.0
        self.last_attempt: float | None = None
        self.last_error: str | None = None

    def poll(self) -> None:
        now = time.monotonic()
        if now < self.next_attempt:
            return
        start = time.perf_counter()
        try:
            if self.server is not None:
                self.server.poll(self.target, self.state, self._points)
            else:
                self.state.publish(self.target.name, self._pooler_points())
        except TargetError as exc:
            self._failed(exc.kind, str(exc))
        except AgentError as exc:
            self._failed("connect", f"target {self.target.name}: {exc}")
        except Exception as exc:  # a bug in one poll must not stop the target's schedule
            log.exception("poll crashed", extra={"target": self.target.name})
            self._failed("query", f"target {self.target.name}: {type(exc).__name__}")
        else:
            if self.failures:
                log.info("target recovered", extra={"target": self.target.name,
                                                    "failures": self.failures})
            self.failures, self.next_attempt, self.last_error = 0, 0.0, None
        finally:
            # Set when the attempt ends: /readyz turns 200 once there is something to scrape.
            self.last_attempt = time.monotonic()
            if self.server is None:  # a server poll's time is recorded by the server
                self.state.record_duration(self.target.name, time.perf_counter() - start)

    def _pooler_points(self) -> PointSet:
        assert self.console is not None
        pooled = self.console.poll()
        self.poolers.put(pooled)
        return pooler_points(pooled, max_groups=self.config.max_groups)

    def _points(self, snapshot: Snapshot) -> PointSet:
        # Named after the clients holding the backends through PgBouncer targets, if any.
        snapshot = relabel(snapshot, pairings_for(snapshot, self.target.dsn,
                                                  self.poolers.latest()))
        attribution = attribute(snapshot, dimensions=self.config.dimensions,
                                max_groups=self.config.max_groups)
        return points(attribution, max_groups=self.config.max_groups)

    def _failed(self, kind: str, message: str) -> None:
        self.poolers.drop(self.target.name)
        self.state.fail(self.target.name, kind)
        self.failures += 1
        delay = min(BACKOFF_CAP_S, 2.0 ** (self.failures - 1))
        self.next_attempt = time.monotonic() + delay * random.uniform(0.8, 1.0)
        if self.failures == 1 or message != self.last_error or self.failures % 10 == 0:
            log.warning("poll failed", extra={"target": self.target.name, "error": kind,
                                              "detail": message, "failures": self.failures,
                                              "retry_in_s": round(delay, 1)})
        self.last_error = message

    def close(self) -> None:
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
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.started = time.monotonic()

    def _skipped(self, event: JobExecutionEvent) -> None:
        self.state.skipped(event.job_id)
        n = self.skips[event.job_id] = self.skips.get(event.job_id, 0) + 1
        if n == 1 or n % 100 == 0:
            log.warning("poll skipped: the previous poll of the target is still running",
                        extra={"target": event.job_id, "skipped": n})

    def ready(self) -> tuple[bool, str]:
        """Ready when every target had a poll attempt within three of its intervals."""
        now = time.monotonic()
        late = [n for n, r in self.runners.items()
                if (r.last_attempt is None and now - self.started > 3 * r.target.interval)
                or (r.last_attempt is not None and now - r.last_attempt > 3 * r.target.interval
                    and now >= r.next_attempt)]
        pending = [n for n, r in self.runners.items() if r.last_attempt is None]
        if late:
            return False, f"not polled recently: {', '.join(late)}"
        if self.runners and len(pending) == len(self.runners):
            return False, "no poll yet"
        return True, "ok"

    def _schedule(self, target: cfg.Target) -> None:
        runner = TargetRunner(target, self.config, self.state, self.poolers, self.servers)
        self.runners[target.name] = runner
        jitter = min(target.interval * 0.1, 2.0)
        self.scheduler.add_job(runner.poll, "interval", seconds=target.interval,
                               jitter=jitter, id=target.name, name=target.name,
                               next_run_time=_now_plus(random.uniform(0, jitter)))

    def _unschedule(self, name: str) -> None:
        self.scheduler.remove_job(name)
        self.runners.pop(name).close()
        self.state.remove(name)
        self.skips.pop(name, None)

    def reload(self) -> None:
        try:
            new = cfg.load(self.config_path, self.overrides)
            if not new.targets and new.targets_dir is None:
                raise ConfigError(f"{new.source}: targets: no target configured")
        except AgentError as exc:
            log.error("reload rejected, keeping the running configuration",
                      extra={"error": str(exc)})
            return
        for field in ("listen", "otlp", "log_format", "client_processes"):
            if getattr(new, field) != getattr(self.config, field):
                log.warning("setting changes need a restart", extra={"setting": field})
        self.watch.reset(new.targets_dir)
        report(new)
        old_targets = {name: runner.target for name, runner in self.runners.items()}
        new_targets = {t.name: t for t in mine(new.targets, new.shard)}
        same_rules = (new.dimensions, new.max_groups) == (self.config.dimensions,
                                                          self.config.max_groups)
        self.config = new
        for name, target in old_targets.items():
            if new_targets.get(name) != target or not same_rules:
                self._unschedule(name)
        for name, target in new_targets.items():
            if name not in self.runners:
                self._schedule(target)
        log.info("configuration reloaded", extra={"targets": sorted(new_targets)})

    def run(self, on_started: Callable[[Daemon], None] | None = None) -> int:
        if self.config.listen:
            web = webconfig.load(self.config.web_config_file) \
                if self.config.web_config_file else None
            self.http = AgentHTTPServer(self.config.listen, self.telemetry.producer, self.ready,
                                        web)
            self.http.start()
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
        self.scheduler.shutdown(wait=True)
        for runner in self.runners.values():
            runner.close()
        self.telemetry.shutdown()
        if self.http:
            self.http.stop()


def _now_plus(seconds: float) -> Any:
    from datetime import datetime, timedelta

    return datetime.now().astimezone() + timedelta(seconds=seconds)
