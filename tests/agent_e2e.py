"""End-to-end helpers: a known workload on a real server, ``pgconn-agent run`` as a process,
the names it gives targets and series, and the server's sessions waited on or stopped.

Shared by every test that runs the agent as a process (tests/conftest.py holds the ``e2e_server``
and ``held`` fixtures built on it). Nothing here mocks the database or the exporters: the agent
is the installed console script, the server is a throwaway PostgreSQL, the sessions are real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from agent import contract as c
from agent.demo.server import LocalServer, free_port
from agent.demo.workload import Workload

T = TypeVar("T")
AGENT = Path(sys.executable).parent / "pgconn-agent"

SHOP_APP = "shop-web"
SHOP_USER = "shop_app"
SHOP_DB = "shop"
SHOP_ROLE_LIMIT = 50
SHOP_DB_LIMIT = 40
BILLING_APP = "billing"
BILLING_USER = "billing_app"
MAX_CONNECTIONS = 100
RESERVED = 3
IDLE_TX_TIMEOUT_S = 600.0

# Prometheus names of the series the agent-process tests read most.
UP = c.AGENT_UP.prometheus_name
COUNT = c.CONNECTION_COUNT.prometheus_name
ERRORS = c.POLL_ERRORS.prometheus_name
SKIPPED = c.POLL_SKIPPED.prometheus_name
POLLS = c.POLL_DURATION.prometheus_name + "_count"
SERVER_DATA = tuple(s.prometheus_name for s in c.METRICS if s.name.startswith("postgresql."))


def wait_until(predicate: Callable[[], T | Literal[False] | None], timeout: float = 15.0,
               what: str = "condition", every: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy (so never None or False: the
    result's type says so); fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        else:
            if result is not None and result is not False and result:
                return result
            last = result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(every)


# -- the server and the situation it holds ------------------------------------------------------


def start_server(**kwargs: Any) -> LocalServer:
    settings = {"idle_in_transaction_session_timeout": f"'{int(IDLE_TX_TIMEOUT_S)}s'",
                **kwargs.pop("settings", {})}
    server = LocalServer(max_connections=MAX_CONNECTIONS, superuser_reserved=RESERVED,
                         settings=settings, **kwargs).start()
    server.execute(f"CREATE ROLE {SHOP_USER} LOGIN CONNECTION LIMIT {SHOP_ROLE_LIMIT}",
                   f"CREATE ROLE {BILLING_USER} LOGIN",
                   f"CREATE DATABASE {SHOP_DB} OWNER {SHOP_USER} "
                   f"CONNECTION LIMIT {SHOP_DB_LIMIT}")
    return server


@dataclass
class Situation:
    """What the workload holds, and so what the agent must report."""

    server: LocalServer
    workload: Workload
    shop_states: dict[str, int]
    billing_idle: int
    holder_pid: int
    waiter_pids: list[int]
    late: dict[str, int] = field(default_factory=dict)

    @property
    def shop_group(self) -> dict[str, str]:
        return {"datname": SHOP_DB, "usename": SHOP_USER, "application_name": SHOP_APP,
                "client_addr": "127.0.0.1"}

    @property
    def billing_group(self) -> dict[str, str]:
        return {"datname": "postgres", "usename": BILLING_USER,
                "application_name": BILLING_APP, "client_addr": "local", "state": "idle"}

    def client_backends(self, agents: int = 1) -> int:
        """Client backends the server holds, counting ``agents`` agent connections."""
        return sum(self.shop_states.values()) + self.billing_idle + sum(self.late.values()) \
            + agents

    @property
    def usable(self) -> int:
        return MAX_CONNECTIONS - RESERVED

    @property
    def target(self) -> str:
        return target_name(self.server)

    def open_late(self, app: str, n: int) -> None:
        """Open ``n`` new idle shop sessions (for ``postgresql.connection.opened``)."""
        self.workload.idle(n, app, user=SHOP_USER, dbname=SHOP_DB)
        self.late[app] = self.late.get(app, 0) + n


@contextlib.contextmanager
def situation(server: LocalServer) -> Iterator[Situation]:
    """shop-web: 10 idle and 3 idle in transaction over TCP, and a lock chain (one holder idle
    in transaction, 2 waiters); billing: 2 idle over the unix socket."""
    workload = Workload(server.dsn(), unix_dsn=server.dsn(via="unix"))
    try:
        workload.idle(10, SHOP_APP, user=SHOP_USER, dbname=SHOP_DB)
        workload.idle_in_transaction(3, SHOP_APP, user=SHOP_USER, dbname=SHOP_DB)
        holder, waiters = workload.lock_chain(SHOP_APP, 2, user=SHOP_USER, dbname=SHOP_DB)
        workload.idle(2, BILLING_APP, via="unix", user=BILLING_USER)
        yield Situation(server, workload, {"idle": 10, "idle in transaction": 4, "active": 2},
                        2, holder, waiters)
    finally:
        workload.close()


# -- the agent process --------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without OTEL_*, PGCONN_AGENT_* or libpq variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "PGCONN_AGENT_", "PG"))}
    env.update(extra)
    return env


class Agent:
    """``pgconn-agent run ... --log-format json`` in a subprocess; stderr goes to a file.

    ``command`` runs the agent some other way (test_image.py: inside the container image);
    ``log_format=None`` leaves the format to the config file (which must then say json for
    ``started()`` to find its line).
    """

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None,
                 command: Sequence[str] = (str(AGENT),), log_format: str | None = "json") -> None:
        self.args = [*command, "run", *args, *(["--log-format", log_format] if log_format
                                               else [])]
        self.env = clean_env(**(env or {}))
        # Lives as long as the process; closed and removed by close().
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="pgconn-agent-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self._log, start_new_session=True)
        self.listen: str | None = None

    # -- logs
    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def started(self, timeout: float = 15.0) -> Agent:
        """Wait for the "started" log line; remembers the /metrics address."""
        def find() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n"
                                     f"{self.stderr()}")
            return next((r for r in self.logs() if r.get("msg") == "started"), None)

        record = wait_until(find, timeout, "the agent's 'started' log line")
        self.listen = record.get("listen")
        return self

    # -- HTTP
    @property
    def url(self) -> str:
        assert self.listen, "agent has no --listen address"
        return f"http://{self.listen}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> str:
        code, body = self.get("/metrics")
        assert code == 200, f"/metrics answered {code}: {body}"
        return body

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """(sample name, labels, value) of every sample on /metrics."""
        return [(s.name, dict(s.labels), s.value)
                for fam in text_string_to_metric_families(self.metrics()) for s in fam.samples]

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample ``name`` whose labels include ``labels`` (None if absent)."""
        found = [v for n, lab, v in self.samples()
                 if n == name and all(lab.get(k) == x for k, x in labels.items())]
        if len(found) > 1:
            raise AssertionError(f"{name}{labels}: {len(found)} samples match")
        return found[0] if found else None

    def wait_polls(self, count: float, timeout: float, what: str, **labels: str) -> None:
        """Wait until the agent has polled ``count`` times (its poll-duration count)."""
        wait_until(lambda: (self.value(POLLS, **labels) or 0) >= count, timeout, what)

    # -- process
    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds it took)."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"agent did not exit within {timeout}s of SIGTERM:\n"
                                 f"{self.stderr()[-3000:]}") from None
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self._log.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def target_name(server: LocalServer, dbname: str = "postgres") -> str:
    """The name the agent gives a target of ``server`` configured by a TCP DSN alone."""
    return f"127.0.0.1:{server.port}/{dbname}"


def polling_agent(*dsns: str, interval: float = 0.5, env: dict[str, str] | None = None
                  ) -> Agent:
    """``pgconn-agent run`` on ``dsns`` every ``interval`` seconds, /metrics on a free port."""
    args = [a for dsn in dsns for a in ("--dsn", dsn)]
    return Agent([*args, "--listen", "127.0.0.1:0", "--interval", str(interval)], env=env)


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections (backlog) but never answers: a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (connection refused)."""
    return free_port()


def agent_backends(server: LocalServer, dbname: str | None = None) -> list[int]:
    """Pids of the agent's own backends on ``server`` (in ``dbname``, if given)."""
    where = f" AND datname = '{dbname}'" if dbname else ""
    return [r[0] for r in server.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgconn-agent'" + where)]


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """A backend that stops answering (SIGSTOP: its socket stays open and the kernel still
    ACKs, so keepalives never fire); continued however the test ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def ensure_database(pg: LocalServer, name: str) -> None:
    """Create ``name`` once on a session-wide server that several modules share."""
    if not pg.execute(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        pg.execute(f"CREATE DATABASE {name}")


def wait_sessions_gone(pg: LocalServer) -> None:
    """Closed clients' backends exit asynchronously; wait until only ours remain."""
    deadline = time.monotonic() + 20
    while True:
        rows = pg.execute("SELECT application_name, state, usename FROM pg_stat_activity "
                          "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        if not rows:
            return
        assert time.monotonic() < deadline, f"{len(rows)} client backends left over: {rows}"
        time.sleep(0.05)
