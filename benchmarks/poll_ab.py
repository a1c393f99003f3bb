"""The poll statement of a git revision against the working tree's, interleaved on one server.

    .venv/bin/python benchmarks/poll_ab.py [--base REV] [--sessions 1000] [--polls 400]
                                            [--statements]

poll_cost.py measures one version at a time; on a shared, loaded machine two runs differ by
more than the change being judged. This runs both versions' SQL (``agent/collect/parts``, or
``agent/collect/sql`` before parts were folders, of REV, default ``main``, and of the working
tree) through the same client code, alternating poll by poll on one server holding
poll_cost.py's session mix, and reads each connection's backend CPU from ``/proc`` (what the
poll costs the database) besides wall and client CPU (medians).
``--statements`` also reads the busy-pool evidence part (on in the last poll of a diagnose
window, and in the daemon only after it saw a busy holder).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from poll_cost import Scenario, open_sessions, prepare

from agent.collect import client, queries
from agent.config import Target
from agent.demo.server import LocalServer
from agent.demo.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
SQL_TREES = ("agent/collect/parts", "agent/collect/sql")
"""Where a revision keeps its ``<part>/<version>.sql`` files: part folders, or the older tree."""


def sql_of(rev: str, into: Path) -> Path:
    tree = next(t for t in SQL_TREES if subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{rev}:{t}"], capture_output=True,
        check=False).returncode == 0)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, tree],
                         check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into / tree


def use(root: Path) -> None:
    """Point the loader at one SQL tree; a part the tree lacks is left out of the poll."""
    queries.SQL_ROOT = root  # type: ignore[assignment]
    queries.versions.cache_clear()
    queries.load.cache_clear()
    queries.poll.cache_clear()


def backend_cpu_ticks(c: client.TargetClient) -> int:
    assert c.backend_pid is not None
    fields = Path(f"/proc/{c.backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="main")
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--polls", type=int, default=400)
    p.add_argument("--statements", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roots = {args.base: sql_of(args.base, Path(tmp)), "working tree": Path(queries.SQL_ROOT)}
        with LocalServer(max_connections=args.sessions + 70) as server:
            prepare(server)
            with Workload(server.dsn(), server.dsn(via="unix")) as work:
                open_sessions(server, work, Scenario(args.sessions))
                clients: dict[str, client.TargetClient] = {}
                for name, root in roots.items():
                    use(root)
                    clients[name] = client.TargetClient(Target(name, server.dsn()))
                    clients[name].statements = args.statements
                    clients[name].poll()
                start = {n: backend_cpu_ticks(c) for n, c in clients.items()}
                wall: dict[str, list[float]] = {n: [] for n in roots}
                cpu: dict[str, list[float]] = {n: [] for n in roots}
                order = list(roots.items())
                for i in range(args.polls):
                    for name, root in order if i % 2 else order[::-1]:
                        use(root)
                        t0, c0 = time.perf_counter(), time.thread_time()
                        clients[name].poll()
                        wall[name].append(time.perf_counter() - t0)
                        cpu[name].append(time.thread_time() - c0)
                server_ms = {n: 10 * (backend_cpu_ticks(c) - start[n]) / args.polls
                             for n, c in clients.items()}
    rows: dict[str, Any] = {n: (statistics.median(wall[n]) * 1000, statistics.median(cpu[n]) * 1000,
                                server_ms[n]) for n in roots}
    print(f"N = {args.sessions}, {args.polls} interleaved polls each"
          + (", statements part on" if args.statements else ""))
    print(f"{'SQL of':<14}  {'wall med':>9}  {'client CPU':>10}  {'server CPU/poll':>15}")
    for name, (w, c, s) in rows.items():
        print(f"{name:<14}  {w:>6.2f} ms  {c:>7.2f} ms  {s:>12.2f} ms")
    (bw, bc, bs), (nw, nc, ns) = rows.values()
    print(f"change: wall {nw / bw - 1:+.1%}, client CPU {nc / bc - 1:+.1%}, "
          f"server CPU {ns / bs - 1:+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
