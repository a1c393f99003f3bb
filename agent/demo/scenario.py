"""``pgconn-agent demo``: "pool 100/100 with one user" on a throwaway server, diagnosed live.

The application's pool really fills the server: its next connection is refused, while the
agent, which holds its own connection, keeps seeing everything.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from types import FrameType

import click

from .. import config as cfg
from .. import spec
from ..daemon import Daemon
from ..diagnose import render
from ..diagnose.run import diagnose_all
from .server import LocalServer, free_port
from .workload import Workload

DEMO_THRESHOLDS = cfg.Thresholds({spec.IDLE_HOARD_AGE: 2.0, spec.IDLE_IN_TRANSACTION_WARNING: 2.0,
                                  spec.IDLE_IN_TRANSACTION_CRITICAL: 4.0})
"""Ages shortened from minutes to seconds so the demo shows every finding at once."""

_SHOWN = ("postgresql_connection_utilization_ratio", "postgresql_connection_count{",
          "postgresql_lock_blocking{", "pgconn_agent_up")


def _setup(server: LocalServer) -> None:
    server.execute("CREATE ROLE shop_app LOGIN", "CREATE ROLE billing LOGIN",
                   "CREATE DATABASE shop OWNER shop_app")


def _incident(work: Workload) -> None:
    """One web application holding most slots, the way a per-request ORM client does it."""
    work.idle(70, "shop-web", user="shop_app", dbname="shop")
    work.idle_in_transaction(6, "shop-web", user="shop_app", dbname="shop")
    work.lock_chain("shop-web", 6, user="shop_app", dbname="shop")
    work.idle(4, "billing-worker", via="unix", user="billing", dbname="shop")
    work.idle(2, "", via="unix", user="shop_app", dbname="shop")


def run_demo(*, keep: bool, polls: int) -> int:
    with _interrupted_by_signals():
        try:
            _run(keep=keep, polls=polls)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.")
    click.echo("Demo finished; the throwaway server and its directory are gone.")
    return 0


def _run(*, keep: bool, polls: int) -> None:
    click.echo("Starting a throwaway PostgreSQL (max_connections 100, 3 reserved for "
               "superusers)...")
    with LocalServer(max_connections=100, superuser_reserved=3) as server:
        click.echo(f"  data directory {server.datadir}")
        _setup(server)
        dsn = server.dsn(user="postgres", dbname="shop")
        with Workload(server.dsn(), server.dsn(via="unix")) as work, _Agent(dsn) as agent:
            click.echo("shop-web opens 83 connections, some left idle in transaction, one "
                       "holding a row lock; billing-worker and a nameless client open 6...")
            _incident(work)
            agent.show(1)
            opened, refusal = work.fill("shop-web", user="shop_app", dbname="shop")
            click.echo(f"\nshop-web's pool grows by {opened} more connections, then the "
                       f"server refuses the next one:\n  {refusal}\nEvery slot an application "
                       f"may use is taken (97 of 97). The agent opened its connection before "
                       f"and keeps it, so it still sees everything:")
            time.sleep(4.5 - 1.2)  # let ages pass the demo thresholds
            agent.show(max(polls, 1), first=2)
            config = cfg.load(None, {"dsns": [dsn]})
            click.echo("\n$ pgconn-agent diagnose --dsn '" + cfg.redact(dsn) + "'\n")
            click.echo("(a new connection: as a superuser it gets one of the 3 reserved slots, "
                       "so it counts itself as the 98th)")
            click.echo(render.text(diagnose_all(config, DEMO_THRESHOLDS)[0]))
            click.echo("(demo thresholds: idle and idle-in-transaction ages in seconds, not "
                       "minutes)\n")
            if keep:
                agent.wait()


@contextlib.contextmanager
def _interrupted_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a supervisor, a closed terminal) end the demo like Ctrl-C, so the
    throwaway server is stopped and its directory removed on every way out."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Agent:
    """``pgconn-agent run`` in a thread of the demo, polling every second."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.listen = f"127.0.0.1:{free_port()}"
        self.daemon = Daemon(None, {"dsns": [dsn], "listen": self.listen, "interval": 1.0})
        self.url = f"http://{self.listen}/metrics"
        self.thread = threading.Thread(target=self.daemon.run, name="demo-daemon", daemon=True)

    def __enter__(self) -> _Agent:
        return self

    def show(self, polls: int, first: int = 1) -> None:
        if not self.thread.is_alive():
            click.echo(f"\n$ pgconn-agent run --dsn '{cfg.redact(self.dsn)}' --listen "
                       f"{self.listen} --interval 1")
            self.thread.start()
        for i in range(first, first + polls):
            time.sleep(1.2)
            body = urllib.request.urlopen(self.url, timeout=5).read().decode()
            lines = [ln for ln in body.splitlines()
                     if ln.startswith(_SHOWN) and ("shop-web" in ln or "{" not in ln
                                                   or "_ratio" in ln or "_up" in ln)]
            click.echo(f"\npoll {i}: {self.url}")
            for line in lines[:8]:
                click.echo("  " + line)

    def wait(self) -> None:
        click.echo(f"Agent running: {self.url} (also /healthz, /readyz). Point Prometheus or an "
                   "OpenTelemetry Collector at it; Ctrl-C (or SIGTERM) stops everything.")
        while self.thread.is_alive():
            self.thread.join(1)

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(15)
