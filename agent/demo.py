"""``pgconn-agent demo``: "pool 100/100 with one user" on a throwaway server, diagnosed live."""

from __future__ import annotations

import threading
import time
import urllib.request

import click

from . import config as cfg
from .daemon import Daemon
from .diagnose import render
from .diagnose.run import diagnose_all
from .pgserver import LocalServer, free_port
from .workload import Workload

DEMO_THRESHOLDS = cfg.Thresholds(idle_hoard_age=2.0, idle_in_transaction_warning=2.0,
                                 idle_in_transaction_critical=4.0)
"""Ages shortened from minutes to seconds so the demo shows every finding at once."""

_SHOWN = ("postgresql_connection_utilization_ratio", "postgresql_connection_count{",
          "postgresql_lock_blocking{", "pgconn_agent_up")


def _setup(server: LocalServer) -> None:
    server.execute("CREATE ROLE shop_app LOGIN", "CREATE ROLE billing LOGIN",
                   "CREATE DATABASE shop OWNER shop_app")


def _incident(server: LocalServer, work: Workload) -> None:
    """One web application holding most slots, the way a per-request ORM client does it."""
    work.idle(70, "shop-web", user="shop_app", dbname="shop")
    work.idle_in_transaction(6, "shop-web", user="shop_app", dbname="shop")
    work.lock_chain("shop-web", 6, user="shop_app", dbname="shop")
    work.idle(4, "billing-worker", via="unix", user="billing", dbname="shop")
    work.idle(2, "", via="unix", user="shop_app", dbname="shop")


def run_demo(*, keep: bool, polls: int) -> int:
    click.echo("Starting a throwaway PostgreSQL (max_connections 100, 3 reserved)...")
    with LocalServer(max_connections=100, superuser_reserved=3) as server:
        _setup(server)
        with Workload(server.dsn(), server.dsn(via="unix")) as work:
            click.echo("Reproducing 'pool 100/100 with one user': shop-web opens 83 "
                       "connections, some left idle in transaction, one holding a row lock...")
            _incident(server, work)
            time.sleep(4.5)  # let ages pass the demo thresholds
            dsn = server.dsn(user="postgres", dbname="shop")
            config = cfg.load(None, {"dsns": [dsn]})
            click.echo("\n$ pgconn-agent diagnose --dsn '" + cfg.redact(dsn) + "'\n")
            click.echo(render.text(diagnose_all(config, DEMO_THRESHOLDS)[0]))
            click.echo("(demo thresholds: idle and idle-in-transaction ages in seconds, not "
                       "minutes)\n")
            _daemon(dsn, keep=keep, polls=polls)
    click.echo("Demo finished; the throwaway server is gone.")
    return 0


def _daemon(dsn: str, *, keep: bool, polls: int) -> None:
    listen = f"127.0.0.1:{free_port()}"
    daemon = Daemon(None, {"dsns": [dsn], "listen": listen, "interval": 1.0})
    url = f"http://{listen}/metrics"
    click.echo(f"$ pgconn-agent run --dsn '{cfg.redact(dsn)}' --listen {listen} --interval 1")
    thread = threading.Thread(target=daemon.run, name="demo-daemon", daemon=True)
    thread.start()
    try:
        for i in range(max(polls, 1)):
            time.sleep(1.2)
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            lines = [ln for ln in body.splitlines()
                     if ln.startswith(_SHOWN) and ("shop-web" in ln or "{" not in ln
                                                   or "_ratio" in ln or "_up" in ln)]
            click.echo(f"\npoll {i + 1}: {url}")
            for line in lines[:8]:
                click.echo("  " + line)
        if keep:
            click.echo(f"\nAgent running: {url} (also /healthz, /readyz). Point Prometheus or "
                       "an OpenTelemetry Collector at it; Ctrl-C stops everything.")
            try:
                while thread.is_alive():
                    thread.join(1)
            except KeyboardInterrupt:
                pass
    finally:
        daemon.stop_event.set()
        thread.join(15)


