"""What naming the client processes costs a poll at N local connections (issue 15).

Run (from a clean clone)::

    bash scripts/setup.sh && .venv/bin/python benchmarks/client_processes.py --connections 1000

Starts a throwaway PostgreSQL sized for N, then N connections over 127.0.0.1 held by
``--processes`` separate Python processes (psycopg, tests/clients/connections.py), so the /proc
scan has to find sockets spread over many processes among everything else on the machine. Then,
interleaved in random order, ``--reps`` times each:

* off: ``TargetClient(client_processes=False).poll()`` + ``attribute()`` + ``points()``;
* on: the same with ``client_processes=True`` (the poll also returns each local connection's
  port, and reads /proc/net/tcp{,6} and the processes' fd links);
* /proc alone: ``processes.read_host()`` for the N (address, port) pairs, and
  ``processes.local_networks()``.

Wall (``time.perf_counter``) and the measuring thread's CPU (``time.thread_time``); prints a
table of medians and p95 and writes JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from client_processes import Clients  # noqa: E402

from agent.aggregate.attribution import attribute  # noqa: E402
from agent.aggregate.points import points  # noqa: E402
from agent.collect import processes  # noqa: E402
from agent.collect.client import TargetClient  # noqa: E402
from agent.config import Target  # noqa: E402
from agent.demo.server import LocalServer  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall ms, thread CPU ms) of one call."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "min": ordered[0], "max": ordered[-1]}


def full_poll(client: TargetClient) -> Callable[[], Any]:
    def run() -> Any:
        return points(attribute(client.poll()))
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--reps", type=int, default=100)
    args = parser.parse_args(argv)
    n, k = args.connections, args.processes
    with LocalServer(max_connections=n + 20) as server, Clients() as clients:
        for i in range(k):
            clients.psycopg(server.dsn(application_name=f"bench-{i % 4}"),
                            n // k + (1 if i < n % k else 0))
        clients.wait_ready()
        target = Target(name="bench", dsn=server.dsn(), interval=15)
        off = TargetClient(target, client_processes=False)
        on = TargetClient(target, client_processes=True)
        snapshot = on.poll()
        ports = [(p.client_addr, p.client_port, p.pid) for p in snapshot.client_ports]
        server_port = snapshot.client_ports[0].server_port
        assert len(ports) == n, len(ports)
        resolved: list[int] = []

        def read_host() -> None:
            host = processes.read_host(ports, server_port)
            resolved.append(sum(processes.connection_key(*key) in host.owners for key in ports))

        ops: dict[str, Callable[[], Any]] = {
            "poll off": full_poll(off), "poll on": full_poll(on),
            "read_host": read_host,
            "local_networks": processes.local_networks,
        }
        samples: dict[str, dict[str, list[float]]] = {
            name: {"wall": [], "cpu": []} for name in ops}
        for _ in range(args.reps):
            for name in random.sample(list(ops), len(ops)):
                wall, cpu = timed(ops[name])
                samples[name]["wall"].append(wall)
                samples[name]["cpu"].append(cpu)
                time.sleep(0.005)
        pids = sum(1 for e in os.scandir("/proc") if e.name.isdigit())
        sockets = sum(len(Path(f"/proc/net/{t}").read_text().splitlines()) - 1
                      for t in ("tcp", "tcp6"))
        off.close()
        on.close()
    result = {
        "taken_at": datetime.now(UTC).isoformat(), "connections": n, "client_processes": k,
        "processes_on_host": pids, "tcp_sockets_in_namespace": sockets, "reps": args.reps,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "python": platform.python_version(),
        "resolved": {"min": min(resolved), "median": statistics.median(resolved)},
        "ops": {name: {m: summary(v) for m, v in s.items()} for name, s in samples.items()},
    }
    print(f"N = {n} local connections in {k} client processes; {pids} processes and {sockets} "
          f"TCP sockets on the host; "
          f"{args.reps} reps, load {os.getloadavg()[0]:.2f}; connections named per read: "
          f"min {min(resolved)}, median {statistics.median(resolved):g}")
    print(f"{'operation':<16} {'wall median':>12} {'wall p95':>10} {'CPU median':>11} "
          f"{'CPU p95':>9}")
    for name, s in result["ops"].items():
        print(f"{name:<16} {s['wall']['median']:>9.2f} ms {s['wall']['p95']:>7.2f} ms "
              f"{s['cpu']['median']:>8.2f} ms {s['cpu']['p95']:>6.2f} ms")
    out = ROOT / "benchmarks" / "results" / (
        f"client_processes-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json")
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
