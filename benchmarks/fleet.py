"""Fleet cost: one agent with 10, 100 and 500 targets on several real PostgreSQL clusters.

Run (from a clean clone)::

    bash scripts/setup.sh && .venv/bin/python benchmarks/fleet.py

Starts ``--servers`` local clusters (agent.demo.server) with ``--databases`` databases each and
``--sessions`` client sessions per cluster (agent.demo.workload: idle over 10 application_names,
some idle in transaction, spread over the databases), and an OTLP gRPC receiver
(tests/otlp_receiver.py). For every interval and target count it starts the real daemon in a
child process (this file with ``--agent``; the child adds a timing wrapper to the scheduler's
executor and to the OTLP push, nothing else) with one target per database, spread evenly over
the clusters, and measures over ``--polls`` intervals after every target is up:

* poll lateness: actual start of a poll job minus its scheduled (jittered) start, p50/p99;
* polls skipped (the daemon's count), agent CPU as a share of one core (/proc utime+stime over
  the window), peak RSS (VmHWM);
* ``/metrics``: body size, samples and scrape time (one scrape per interval);
* OTLP: bytes per export (the receiver's decoded request size) and the push's export time;
* connections the agent holds on each cluster (pg_stat_activity, mid-window).

Prints a table and writes ``benchmarks/results/fleet-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent.demo.server import LocalServer, free_port  # noqa: E402
from agent.demo.workload import Workload  # noqa: E402

APPS = 10


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


# -- the child: the real daemon with timing wrappers -------------------------------------------


def run_agent(config: str, out: str) -> int:
    """``pgconn-agent run --config CONFIG`` in-process, recording lateness and export times."""
    from apscheduler.executors.base import run_job
    from apscheduler.executors.pool import ThreadPoolExecutor

    from agent import logs
    from agent.daemon import Daemon

    late: list[tuple[float, float]] = []
    exports: list[tuple[float, float]] = []

    class TimedExecutor(ThreadPoolExecutor):  # type: ignore[misc]
        def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
            def timed(*args: Any) -> Any:
                now = time.time()
                late.append((now, now - run_times[0].timestamp()))
                return run_job(*args)

            def done(f: Any) -> None:
                if f.exception():
                    self._run_job_error(job.id, f.exception(), None)
                else:
                    self._run_job_success(job.id, f.result())

            self._pool.submit(timed, job, job._jobstore_alias, run_times,
                              self._logger.name).add_done_callback(done)

    daemon = Daemon(Path(config), {})
    logs.setup("json", "warning")
    daemon.scheduler.remove_executor("default")
    daemon.scheduler.add_executor(TimedExecutor(max_workers=32), "default")
    push = daemon.telemetry.push
    if push is not None:
        export = push.export

        def timed_export() -> None:
            start = time.perf_counter()
            export()
            exports.append((time.time(), time.perf_counter() - start))

        push.export = timed_export  # type: ignore[method-assign]
    daemon.install_signal_handlers()
    try:
        daemon.run()
    finally:
        Path(out).write_text(json.dumps({"late": late, "exports": exports,
                                         "skipped": sum(daemon.skips.values())}))
    return 0


# -- the parent: servers, sessions, runs ---------------------------------------------------------


@contextmanager
def clusters(count: int, databases: int, sessions: int) -> Iterator[list[LocalServer]]:
    with ExitStack() as stack:
        servers = []
        for _ in range(count):
            server = LocalServer(max_connections=sessions + 60,
                                 settings={"max_locks_per_transaction": "64"})
            stack.callback(server.stop)
            server.start()
            server.execute(*(f"CREATE DATABASE db{d:03d} STRATEGY FILE_COPY"
                             for d in range(databases)))
            work = stack.enter_context(Workload(server.dsn()))
            per_db = max(1, sessions // min(databases, 20))
            for i in range(sessions // per_db):
                dbname = f"db{(i * 7) % databases:03d}"
                if i % 10 == 9:
                    work.idle_in_transaction(per_db, f"app-{i % APPS}", dbname=dbname)
                else:
                    work.idle(per_db, f"app-{i % APPS}", dbname=dbname)
            servers.append(server)
        yield servers


def scrape(url: str) -> tuple[float, int, int, dict[str, int]]:
    """Scrape time, body size, samples, and samples per metric family."""
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = resp.read()
    took = time.perf_counter() - start
    families: dict[str, int] = {}
    family = ""
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif line and not line.startswith("#"):
            families[family] = families.get(family, 0) + 1
    return took, len(body), sum(families.values()), families


def agent_connections(servers: list[LocalServer]) -> list[int]:
    return [int(s.execute("SELECT count(*) FROM pg_stat_activity "
                          "WHERE application_name = 'pgconn-agent'")[0][0]) for s in servers]


def write_config(path: Path, servers: list[LocalServer], targets: int, interval: float,
                 port: int, otlp: str) -> None:
    lines = [f"[agent]\ninterval = {interval}\nlisten = '127.0.0.1:{port}'\n",
             f"[otlp]\nenabled = true\nendpoint = '{otlp}'\nprotocol = 'grpc'\n"
             f"insecure = true\nexport_interval = {interval}\n"]
    for i in range(targets):
        server, db = servers[i % len(servers)], i // len(servers)
        lines.append(f"[[targets]]\nname = 's{i % len(servers)}-db{db:03d}'\n"
                     f"dsn = '{server.dsn(dbname=f'db{db:03d}')}'\n")
    path.write_text("\n".join(lines))


def run_once(servers: list[LocalServer], receiver: Any, targets: int, interval: float,
             polls: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    config, out = tmp / f"fleet-{targets}-{interval}.toml", tmp / f"fleet-{targets}-{interval}.json"
    write_config(config, servers, targets, interval, port, receiver.endpoint)
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen([sys.executable, __file__, "--agent", str(config), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 3 * interval + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                with urllib.request.urlopen(url, timeout=30) as resp:
                    body = resp.read().decode()
                up = sum(1 for line in body.splitlines()
                         if line.startswith("pgconn_agent_up{") and line.endswith(" 1.0"))
                if up == targets:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {up} of {targets} targets up")
            time.sleep(0.5)
        time.sleep(interval)  # one more full round before the window opens
        receiver.clear()
        started, cpu0 = time.time(), proc_cpu(proc.pid)
        scrapes, connections = [], None
        for i in range(polls):
            time.sleep(interval / 2)
            scrapes.append(scrape(url))
            if i == polls // 2:
                connections = agent_connections(servers)
            time.sleep(interval / 2)
        wall, cpu = time.time() - started, proc_cpu(proc.pid) - cpu0
        peak_kb = proc_kb(proc.pid, "VmHWM")
        exported = [r.request.ByteSize() for r in receiver.received]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    child = json.loads(out.read_text())
    late = [lag for at, lag in child["late"] if started <= at <= started + wall]
    exports = [s for at, s in child["exports"] if started <= at <= started + wall]
    return {
        "targets": targets, "interval_s": interval, "window_s": round(wall, 1),
        "polls_started": len(late),
        "lateness_p50_ms": percentile(late, 0.5) * 1000,
        "lateness_p99_ms": percentile(late, 0.99) * 1000,
        "lateness_max_ms": max(late, default=float("nan")) * 1000,
        "skipped": child["skipped"],
        "cpu_share": cpu / wall,
        "peak_rss_mb": peak_kb / 1024,
        "metrics_bytes": statistics.median(s[1] for s in scrapes),
        "metrics_samples": statistics.median(s[2] for s in scrapes),
        "scrape_ms_median": statistics.median(s[0] for s in scrapes) * 1000,
        "scrape_ms_max": max(s[0] for s in scrapes) * 1000,
        "otlp_bytes_per_export": statistics.median(exported) if exported else None,
        "otlp_exports": len(exported),
        "otlp_export_ms_median": statistics.median(exports) * 1000 if exports else None,
        "otlp_export_ms_max": max(exports) * 1000 if exports else None,
        "connections_per_server": connections,
        "samples_by_metric": scrapes[-1][3],
        "load_at_end": loadavg(),
    }


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| targets | interval | lateness p50 / p99 | skipped | CPU (1 core) | peak RSS | "
           "/metrics size / samples / scrape | OTLP per export / time | agent conns per server |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        otlp = (f"{r['otlp_bytes_per_export'] / 1024:.0f} KiB / {r['otlp_export_ms_median']:.0f} ms"
                if r["otlp_bytes_per_export"] and r["otlp_export_ms_median"] else "n/a")
        out.append(
            f"| {r['targets']} | {r['interval_s']:g} s | {r['lateness_p50_ms']:.0f} / "
            f"{r['lateness_p99_ms']:.0f} ms | {r['skipped']} | {r['cpu_share']:.1%} | "
            f"{r['peak_rss_mb']:.0f} MB | {r['metrics_bytes'] / 1024:.0f} KiB / "
            f"{r['metrics_samples']:.0f} / {r['scrape_ms_median']:.0f} ms (max "
            f"{r['scrape_ms_max']:.0f}) | {otlp} | {r['connections_per_server']} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--targets", default="10,100,500")
    parser.add_argument("--intervals", default="15,5")
    parser.add_argument("--servers", type=int, default=5)
    parser.add_argument("--databases", type=int, default=100, help="per server")
    parser.add_argument("--sessions", type=int, default=60, help="client sessions per server")
    parser.add_argument("--polls", type=int, default=4, help="intervals measured per run")
    args = parser.parse_args()
    if args.agent:
        return run_agent(args.agent, args.out)
    from otlp_receiver import GrpcReceiver

    counts = [int(n) for n in args.targets.split(",")]
    intervals = [float(s) for s in args.intervals.split(",")]
    assert max(counts) <= args.servers * args.databases, "more targets than databases"
    rows = []
    load_before = loadavg()
    began = time.monotonic()
    with clusters(args.servers, args.databases, args.sessions) as servers, \
            tempfile.TemporaryDirectory() as tmp:
        setup_s = time.monotonic() - began
        receiver = GrpcReceiver().up()
        try:
            for interval in intervals:
                for n in counts:
                    row = run_once(servers, receiver, n, interval, args.polls, Path(tmp))
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            receiver.down()
    result = {"at": datetime.now(UTC).isoformat(), "load_before": load_before,
              "cpus": os.cpu_count(), "setup_s": round(setup_s, 1), "args": vars(args),
              "runs": rows}
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"fleet-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))
    print(f"written to {path.relative_to(ROOT)}; load average before {load_before}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "fleet-bench"
    sys.exit(main())
