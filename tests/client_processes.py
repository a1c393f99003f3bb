"""Real client processes for the process-attribution tests: node-postgres pools, psycopg.

Node runs tests/clients/pools.js from a folder whose node_modules is the one
scripts/install-node-clients.sh installed (npm ``pg``), as an application's would be.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = Path(__file__).resolve().parent / "clients"
READY_TIMEOUT_S = 60.0


def node_app(workdir: Path) -> Path:
    """A folder holding pools.js and a node_modules with npm pg; returns the script's path."""
    installed = subprocess.run(["bash", str(ROOT / "scripts" / "install-node-clients.sh")],
                               check=True, capture_output=True, text=True).stdout.strip()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "node_modules").symlink_to(Path(installed) / "node_modules",
                                          target_is_directory=True)
    script = workdir / "pools.js"
    shutil.copy(CLIENTS / "pools.js", script)
    return script


class Clients:
    """Client processes that each print "ready" once connected; closed (stdin EOF) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> int:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc.pid

    def node_pools(self, script: Path, pools: int, per_pool: int, *, port: int, app: str) -> int:
        node = shutil.which("node")
        assert node, "node missing: run scripts/setup.sh"
        return self.start([node, str(script), str(pools), str(per_pool)], {
            "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres",
            "PGDATABASE": "postgres", "PGAPPNAME": app})

    def psycopg(self, dsn: str, n: int) -> int:
        return self.start([sys.executable, str(CLIENTS / "connections.py"), dsn, str(n)])

    def wait_ready(self) -> None:
        for proc in self.procs:
            assert proc.stdout is not None
            readable, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
            line = proc.stdout.readline() if readable else ""
            if line.strip() != "ready":
                proc.kill()
                _, err = proc.communicate(timeout=READY_TIMEOUT_S)
                raise AssertionError(f"client {proc.args!r} did not connect: {str(err).strip()}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
