"""Long run: many polls against a churning workload with the OTLP collector
flapping; RSS, open file descriptors and threads stay flat.

The poll loop drives ``TargetRunner.poll()`` in this process, back to back, with the daemon's
real pieces around it: the OpenTelemetry provider exporting OTLP/gRPC every 50 ms to the in-test
receiver, which goes down and comes back every 0.3 s; the ``/metrics`` server, scraped by a
thread; a real server where a thread keeps opening sessions under ever new application names
(some left idle in transaction) and closing the oldest. Process gauges are read after a warm-up
and at the end, with the churn and the flapping paused in the same state both times.

CI runs ``PGCONN_LONGRUN_POLLS`` polls (default 2,000, ~15 s). The issue's full run::

    PGCONN_LONGRUN_POLLS=20000 .venv/bin/pytest -q tests/test_long_run.py
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import threading
import time
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
from otlp_receiver import GrpcReceiver
from process_stats import ProcStats, proc_stats

from agent import config as cfg
from agent import contract as c
from agent.aggregate.history import History
from agent.daemon import TargetRunner
from agent.demo.server import LocalServer
from agent.export import otel
from agent.export.http import AgentHTTPServer
from agent.export.state import MetricsState

POLLS = int(os.environ.get("PGCONN_LONGRUN_POLLS", "2000"))
WARMUP = max(100, POLLS // 10)
MAX_GROUPS = 50
CHURN_HELD = 20
RSS_GROWTH_KB = 8 * 1024


class Background:
    """A worker thread doing ``step()`` in a loop, which can be parked in a known state."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._park = threading.Event()
        self._parked = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.steps = 0

    def step(self) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        """Bring the worker's resources to their parked state."""

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._park.is_set():
                self.settle()
                self._parked.set()
                while self._park.is_set() and not self._stop.is_set():
                    time.sleep(0.01)
                self._parked.clear()
                continue
            self.step()
            self.steps += 1

    @contextlib.contextmanager
    def parked(self) -> Iterator[None]:
        self._park.set()
        assert self._parked.wait(30), f"{self.thread.name} did not park"
        try:
            yield
        finally:
            self._park.clear()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)


class Churn(Background):
    """Keeps CHURN_HELD sessions: each step closes the oldest and opens one with a new name."""

    def __init__(self, dsn: str) -> None:
        super().__init__("churn")
        self.dsn = dsn
        self.held: collections.deque[psycopg.Connection[object]] = collections.deque()

    def step(self) -> None:
        conn = psycopg.connect(self.dsn, application_name=f"churn-{self.steps}",
                               autocommit=True)
        if self.steps % 3 == 0:
            conn.execute("BEGIN")
            conn.execute("SELECT 1")
        self.held.append(conn)
        while len(self.held) > CHURN_HELD:
            self.held.popleft().close()
        time.sleep(0.01)

    def settle(self) -> None:
        while len(self.held) < CHURN_HELD:
            self.step()

    def stop(self) -> None:
        super().stop()
        for conn in self.held:
            conn.close()


class Flapper(Background):
    """The collector goes away and comes back; parked means up."""

    def __init__(self, receiver: GrpcReceiver) -> None:
        super().__init__("flapper")
        self.receiver = receiver

    def step(self) -> None:
        self.receiver.down()
        time.sleep(0.3)
        self.receiver.up()
        time.sleep(0.3)


class Scraper(Background):
    def __init__(self, url: str) -> None:
        super().__init__("scraper")
        self.url = url
        self.failures = 0

    def step(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                resp.read()
        except OSError:
            self.failures += 1
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(max_connections=60) as srv:
        srv.execute("CREATE ROLE monitor LOGIN IN ROLE pg_monitor")
        yield srv


def gauges(workers: list[Background], receiver: GrpcReceiver) -> ProcStats:
    with contextlib.ExitStack() as stack:
        for worker in workers:
            stack.enter_context(worker.parked())
        time.sleep(0.3)  # let exports and scrapes in flight finish
        receiver.clear()  # the in-test collector keeps requests: not the agent's memory
        gc.collect()
        return proc_stats()


def test_long_run_is_flat(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1")
    threads_at_start = _threads()
    # The in-test collector keeps one request: kept requests (~100 KB each, parsed) grew this
    # process by ~4 KB per poll, measured as the agent's until it was bounded here.
    receiver = GrpcReceiver(keep=1).up()
    target = cfg.Target("longrun", server.dsn(user="monitor"), interval=0.01)
    config = cfg.Config(targets=(target,), interval=0.01, max_groups=MAX_GROUPS, listen=None,
                        otlp=cfg.OtlpConfig(enabled=True, endpoint=receiver.endpoint,
                                            protocol="grpc", insecure=True,
                                            export_interval=0.05))
    state = MetricsState(MAX_GROUPS)
    telemetry = otel.build(config, state)
    telemetry.start()
    http = AgentHTTPServer("127.0.0.1:0", telemetry.producer, lambda: (True, "ok"))
    http.start()
    runner = TargetRunner(target, config, state)
    # The history is bounded in time (15 minutes by default) and grows until then by design; a
    # short retention reaches that bound within the warm-up, so flat memory here means bounded.
    runner.history = History(retention=3.0, detail=1.0, coarse=0.5, max_holders=MAX_GROUPS)
    workers: list[Background] = [Churn(server.dsn()), Flapper(receiver),
                                 Scraper(f"http://{http.address}/metrics")]
    failed = 0
    try:
        for worker in workers:
            worker.start()

        def poll() -> None:
            nonlocal failed
            runner.next_attempt = 0.0  # no backoff: this loop is the schedule
            before = runner.failures
            runner.poll()
            failed += runner.failures > before

        for _ in range(WARMUP):
            poll()
        start = gauges(workers, receiver)
        began = time.monotonic()
        for _ in range(POLLS - WARMUP):
            poll()
        took = time.monotonic() - began
        end = gauges(workers, receiver)
        exported = receiver.total
        print(f"longrun: {POLLS} polls ({took / (POLLS - WARMUP) * 1000:.1f} ms each), "
              f"{failed} failed, {workers[0].steps} sessions churned, {workers[1].steps} "
              f"collector flaps, {exported} exports received, {workers[2].steps} scrapes; "
              f"start {start}, end {end}")
    finally:
        for worker in workers:
            worker.stop()
        runner.close()
        telemetry.shutdown()
        http.stop()
        receiver.down()

    assert failed <= POLLS // 100, f"{failed} of {POLLS} polls failed"
    assert workers[0].steps >= 50 and workers[1].steps >= 2 and exported > 0
    assert end.rss_kb - start.rss_kb < RSS_GROWTH_KB, (start, end)
    assert end.fds <= start.fds + 3, (start, end)
    assert end.threads <= start.threads + 2, (start, end)
    opened = state.observe(c.CONNECTION_OPENED.name)
    assert 0 < len(opened) <= MAX_GROUPS
    agent_sessions = server.execute("SELECT count(*) FROM pg_stat_activity "
                                    "WHERE application_name = 'pgconn-agent'")
    assert agent_sessions == [(0,)]  # closed with the runner: nothing left on the server
    deadline = time.monotonic() + 10
    while _threads() > threads_at_start and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _threads() <= threads_at_start, threading.enumerate()


def _threads() -> int:
    """Threads alive, but the process-wide poll-deadline watchdog: started by the first poll of
    the process, it stays for the next (agent.collect.deadline)."""
    return sum(1 for t in threading.enumerate() if t.name != "poll-deadlines")
