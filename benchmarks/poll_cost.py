"""The cost of one poll at N client sessions: the floor, pgconn-agent and postgres_exporter.

Run (from a clean clone)::

    bash scripts/setup.sh && PGCONN_WITH_PEER=1 bash scripts/setup.sh \
        && .venv/bin/python benchmarks/poll_cost.py --sessions 100,1000,3000

For every N this starts a throwaway PostgreSQL sized for N (agent.demo.server), opens N
sessions (agent.demo.workload) over ~40 application_names, 4 users and 3 databases (~10% idle
in transaction, a few lock chains, the rest idle; ~10% over the unix socket), starts Debian's
prometheus-postgres-exporter against it and then, in a separate measuring process so that the
workload's own connections do not pollute CPU and memory figures, interleaves in random order:

* floor: one aggregated ``SELECT ... FROM pg_stat_activity GROUP BY ...`` on an open psycopg
  connection, the least any agent must pay;
* agent: ``TargetRunner.poll()`` (collect, attribute, points, publish) plus one collection of
  the OpenTelemetry data (``Producer.get_metrics_data()``, what OTLP export and /metrics read);
  wall and the agent's own CPU (``time.thread_time``) of both parts;
* exporter: one ``/metrics`` scrape; wall, and its CPU per scrape from ``/proc/<pid>/stat``.

The server-side CPU of each (the backends' ``/proc/<pid>/stat``) is reported too: it is what a
poll costs the database itself. Peak RSS is measured on the real daemon (``pgconn-agent run``)
with 1 and with ``--targets`` targets configured against the same server. At the largest N a
second scenario gives every session its own application_name to show the cardinality cap.

Prints a table (median and p95 per N) and writes JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from psycopg import conninfo  # noqa: E402

from agent import contract  # noqa: E402
from agent.demo.server import LocalServer, free_port  # noqa: E402
from agent.demo.workload import Workload  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
EXPORTER = "prometheus-postgres-exporter"
FLOOR_SQL = ("SELECT datname, usename, application_name, state, count(*) "
             "FROM pg_stat_activity GROUP BY 1, 2, 3, 4")
APPS = 40
USERS = ("web", "worker", "report", "admin")
DATABASES = {"shop": "web", "billing": "worker", "analytics": "report"}
"""Database -> owning user (owners may create the lock-chain table in PostgreSQL 15+)."""
MONITORS = ("bench_agent", "bench_floor", "bench_exporter")
CLK_TCK = os.sysconf("SC_CLK_TCK")
HEADROOM = 60
"""Slots beyond N: monitors, the exporter, the daemon's targets, the workload's helpers."""


# --------------------------------------------------------------------------- small helpers

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def stats(values: list[float]) -> dict[str, float]:
    """Median, p95, mean, min, max (same unit as the input)."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"median": statistics.median(ordered), "p95": p95,
            "mean": statistics.fmean(ordered), "min": ordered[0], "max": ordered[-1],
            "n": len(ordered)}


def ms(values: list[float]) -> dict[str, float]:
    return {k: (v * 1000 if k != "n" else v) for k, v in stats(values).items()}


def get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


def clean_env() -> dict[str, str]:
    """The environment for child processes: no OTLP export, no agent overrides."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "PGCONN_AGENT_"))}


# --------------------------------------------------------------------------- the scenario

@dataclass
class Scenario:
    sessions: int
    distinct_apps: bool = False

    @property
    def name(self) -> str:
        return f"{self.sessions}" + ("-distinct-apps" if self.distinct_apps else "")


def prepare(server: LocalServer) -> None:
    server.execute(*(f"CREATE ROLE {u} LOGIN" for u in USERS),
                   *(f"CREATE ROLE {m} LOGIN IN ROLE pg_monitor" for m in MONITORS),
                   *(f"CREATE DATABASE {db} OWNER {owner}" for db, owner in DATABASES.items()))


def open_sessions(server: LocalServer, work: Workload, sc: Scenario) -> dict[str, int]:
    """N sessions: a few lock chains, ~10% idle in transaction, the rest idle."""
    n = sc.sessions
    chains = max(2, n // 300)
    waiters = 4
    idle_tx = max(0, round(0.1 * n) - chains)
    idle = n - chains * (waiters + 1) - idle_tx
    dbs = list(DATABASES)
    for i in range(chains):
        db = dbs[i % len(dbs)]
        work.lock_chain(f"app-{i:02d}", waiters, row=i + 1, user=DATABASES[db], dbname=db)

    jobs: list[tuple[str, int, str, dict[str, Any]]] = []

    def spread(count: int, kind: str) -> None:
        if sc.distinct_apps:
            for j in range(count):
                jobs.append((kind, 1, f"svc-{kind[:2]}-{j:05d}", where(j)))
            return
        for a in range(APPS):
            share = count // APPS + (1 if a < count % APPS else 0)
            if share:
                jobs.append((kind, share, f"app-{a:02d}", where(a)))

    def where(i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"user": USERS[i % len(USERS)], "dbname": dbs[i % len(dbs)]}
        if i % 10 == 9:
            out["via"] = "unix"
        return out

    spread(idle, "idle")
    spread(idle_tx, "idle_in_transaction")

    def run(job: tuple[str, int, str, dict[str, Any]]) -> None:
        kind, count, app, kw = job
        getattr(work, kind)(count, app, **kw)

    with ThreadPoolExecutor(16 if sc.distinct_apps else 4) as pool:
        list(pool.map(run, jobs))
    rows = server.execute("SELECT count(*) FROM pg_stat_activity "
                          "WHERE backend_type = 'client backend' AND usename = ANY('{"
                          + ",".join(USERS) + "}')")
    return {"sessions": int(rows[0][0]), "lock_chains": chains, "waiters": chains * waiters,
            "idle_in_transaction": idle_tx + chains, "idle": idle}


@contextmanager
def exporter(server: LocalServer) -> Iterator[tuple[str, int]]:
    """Debian's prometheus-postgres-exporter on a free port, as bench_exporter."""
    port = free_port()
    dsn = (f"postgresql://bench_exporter@127.0.0.1:{server.port}/postgres"
           f"?sslmode=disable&application_name=postgres_exporter")
    env = {**clean_env(), "DATA_SOURCE_NAME": dsn}
    proc = subprocess.Popen([EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: b"pg_up 1" in get(url), 30, "postgres_exporter")
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(server: LocalServer, args: argparse.Namespace, exporter_url: str | None,
            exporter_pid: int | None) -> dict[str, Any]:
    """Run the interleaved measurement in a fresh interpreter (see ``child_measure``)."""
    cmd = [sys.executable, __file__, "--child", "measure", "--reps", str(args.reps),
           "--warmup", str(args.warmup), "--port", str(server.port)]
    if exporter_url and exporter_pid:
        cmd += ["--exporter-url", exporter_url, "--exporter-pid", str(exporter_pid)]
    if args.profile:
        cmd += ["--profile", str(args.profile)]
    out = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measuring process failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def daemon_rss(server: LocalServer, targets: int, polls: int) -> dict[str, Any]:
    """The real daemon (``pgconn-agent run``) with ``targets`` targets polled every second.

    Waits until every target has ``polls`` polls and /metrics has been scraped after each
    round, then reads VmHWM (peak RSS) and the CPU per poll (whole process, steady state).
    """
    port = free_port()
    dsn = conninfo.make_conninfo("", host="127.0.0.1", port=server.port, user="bench_agent",
                                 dbname="postgres")
    lines = ["[agent]", "interval = 1.0", f'listen = "127.0.0.1:{port}"',
             'log_level = "warning"', ""]
    for i in range(targets):
        lines += ["[[targets]]", f'name = "t{i}"', f"dsn = {json.dumps(dsn)}", ""]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write("\n".join(lines))
        cfg_path = f.name
    exe = Path(sys.executable).with_name("pgconn-agent")
    cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "agent"])
    proc = subprocess.Popen([*cmd, "run", "--config", cfg_path], env=clean_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/metrics"

    def counts() -> list[float]:
        body = get(url).decode()
        found = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                 if line.startswith("pgconn_agent_poll_duration_seconds_count")]
        return found if len(found) == targets else [0.0]

    try:
        wait_until(lambda: min(counts()) >= 2, 60, "the daemon's first polls")
        cpu0, polls0 = cpu_seconds(proc.pid), sum(counts())
        wait_until(lambda: min(counts()) >= polls, polls * 3 + 30, f"{polls} polls per target",
                   every=1.0)  # about one scrape per poll round, as CPU per poll includes it
        cpu1, polls1 = cpu_seconds(proc.pid), sum(counts())
        series = sum(1 for line in get(url).decode().splitlines()
                     if line and not line.startswith("#"))
        return {"targets": targets, "peak_rss_mb": proc_status_kb(proc.pid, "VmHWM") / 1024,
                "rss_mb": proc_status_kb(proc.pid, "VmRSS") / 1024,
                "cpu_ms_per_poll": (cpu1 - cpu0) * 1000 / max(polls1 - polls0, 1),
                "polls": polls1, "metrics_lines": series}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(cfg_path)


def run_scenario(sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n== N = {sc.sessions}{' (distinct application_names)' if sc.distinct_apps else ''}",
          file=sys.stderr, flush=True)
    server = LocalServer(max_connections=sc.sessions + HEADROOM + args.targets,
                         superuser_reserved=3)
    server.start()
    try:
        prepare(server)
        with Workload(server.dsn(), server.dsn(via="unix")) as work:
            t0 = time.monotonic()
            shape = open_sessions(server, work, sc)
            print(f"   {shape['sessions']} sessions open in {time.monotonic() - t0:.1f} s",
                  file=sys.stderr, flush=True)
            if args.no_exporter:
                result = measure(server, args, None, None)
            else:
                with exporter(server) as (url, pid):
                    result = measure(server, args, url, pid)
            result["workload"] = shape
            result["max_connections"] = sc.sessions + HEADROOM + args.targets
            if not args.no_rss:
                result["daemon"] = [daemon_rss(server, t, args.daemon_polls)
                                    for t in sorted({1, args.targets})]
        return result
    finally:
        server.stop()


# --------------------------------------------------------------------------- measuring child

def child_measure(args: argparse.Namespace) -> None:
    """Interleaved floor / agent / exporter rounds against the server on ``--port``."""
    import psycopg

    from agent import config as cfg
    from agent.daemon import TargetRunner
    from agent.export import otel
    from agent.export.state import MetricsState

    def dsn(user: str) -> str:
        return conninfo.make_conninfo("", host="127.0.0.1", port=args.port, user=user,
                                      dbname="postgres")

    config = cfg.load(None, {"dsns": [dsn("bench_agent")], "listen": ""})
    state = MetricsState(config.max_groups)
    telemetry = otel.build(config, state)
    pull = telemetry.producer
    runner = TargetRunner(config.targets[0], config, state)
    floor = psycopg.connect(dsn("bench_floor"), autocommit=True,
                            application_name="bench_floor")
    samples: dict[str, list[float]] = {k: [] for k in (
        "floor_wall", "floor_cpu", "poll_wall", "poll_cpu", "collect_wall", "collect_cpu",
        "agent_wall", "agent_cpu", "agent_process_cpu", "exporter_wall")}
    last: dict[str, Any] = {}

    def op_floor() -> None:
        c0, t0 = time.thread_time(), time.perf_counter()
        floor.execute(FLOOR_SQL).fetchall()
        t1, c1 = time.perf_counter(), time.thread_time()
        samples["floor_wall"].append(t1 - t0)
        samples["floor_cpu"].append(c1 - c0)

    def op_agent() -> None:
        p0, c0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
        runner.poll()
        t1, c1 = time.perf_counter(), time.thread_time()
        data = pull.get_metrics_data()
        t2, c2, p2 = time.perf_counter(), time.thread_time(), time.process_time()
        if runner.failures:
            raise RuntimeError(f"agent poll failed: {runner.last_error}")
        last["data"] = data
        for key, value in (("poll_wall", t1 - t0), ("poll_cpu", c1 - c0),
                           ("collect_wall", t2 - t1), ("collect_cpu", c2 - c1),
                           ("agent_wall", t2 - t0), ("agent_cpu", c2 - c0),
                           ("agent_process_cpu", p2 - p0)):
            samples[key].append(value)

    def op_exporter() -> None:
        t0 = time.perf_counter()
        body = get(args.exporter_url)
        samples["exporter_wall"].append(time.perf_counter() - t0)
        last["exporter_body"] = body

    ops: list[Callable[[], None]] = [op_floor, op_agent]
    if args.exporter_url:
        ops.append(op_exporter)
    rng = random.Random(6)
    for _ in range(args.warmup):
        for op in ops:
            op()
    for values in samples.values():
        values.clear()

    backends = _backends(floor)
    # The agent's connection belongs to its server's shared poll: found by its name.
    watched = {"floor": [floor.info.backend_pid],
               "agent": backends.get(contract.AGENT_APPLICATION_NAME, []),
               "exporter": backends.get("postgres_exporter", [])}
    server_cpu0 = {k: sum(cpu_seconds(p) for p in pids) for k, pids in watched.items()}
    exporter_cpu0 = cpu_seconds(args.exporter_pid) if args.exporter_pid else 0.0
    for _ in range(args.reps):
        rng.shuffle(ops)
        for op in ops:
            op()
            time.sleep(0.005)
    exporter_cpu1 = cpu_seconds(args.exporter_pid) if args.exporter_pid else 0.0
    server_cpu = {k: (sum(cpu_seconds(p) for p in pids) - server_cpu0[k]) * 1000 / args.reps
                  for k, pids in watched.items() if pids}
    if _backends(floor).get("postgres_exporter", []) != watched["exporter"]:
        server_cpu.pop("exporter", None)  # it reconnected: the figure would be incomplete

    result: dict[str, Any] = {
        "reps": args.reps,
        "ms": {k: ms(v) for k, v in samples.items() if v},
        "server_cpu_ms_per_op": server_cpu,
        "agent_series": _series(last["data"]),
        "measuring_process_peak_rss_mb":
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.exporter_url:
        body = last["exporter_body"].decode()
        result["exporter_cpu_ms_per_scrape"] = (exporter_cpu1 - exporter_cpu0) * 1000 / args.reps
        result["exporter_series"] = sum(1 for line in body.splitlines()
                                        if line and not line.startswith("#"))
        result["exporter_peak_rss_mb"] = proc_status_kb(args.exporter_pid, "VmHWM") / 1024
    if args.profile:
        result["profile"] = _profile(runner, pull, args.profile)
    json.dump(result, sys.stdout)


def _backends(conn: Any) -> dict[str, list[int]]:
    rows = conn.execute("SELECT application_name, array_agg(pid ORDER BY pid) "
                        "FROM pg_stat_activity GROUP BY 1").fetchall()
    return {app: list(pids) for app, pids in rows}


def _series(data: Any) -> dict[str, Any]:
    """Data points per metric of one collection; the largest per-target count is what the
    cardinality cap bounds."""
    per_metric: dict[str, int] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                per_metric[metric.name] = len(metric.data.data_points)
    return {"total": sum(per_metric.values()), "largest_metric": max(per_metric.values()),
            "per_metric": dict(sorted(per_metric.items()))}


def _profile(runner: Any, pull: Any, polls: int) -> str:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(polls):
        runner.poll()
        pull.get_metrics_data()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


# --------------------------------------------------------------------------- report

def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarize(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The floors of issue 6, evaluated at N = 1,000 (or the N closest to it)."""
    plain = {int(k): v for k, v in results.items() if k.isdigit()}
    if not plain:
        return {}
    n = min(plain, key=lambda x: abs(x - 1000))
    r = plain[n]
    m = r["ms"]
    out: dict[str, Any] = {"at_sessions": n}
    out["agent_over_floor"] = ratio(m["agent_wall"]["median"], m["floor_wall"]["median"])
    out["agent_poll_only_over_floor"] = ratio(m["poll_wall"]["median"],
                                              m["floor_wall"]["median"])
    checks = {"agent wall <= 1.5 x floor": out["agent_over_floor"] <= 1.5}
    if "exporter_wall" in m:
        out["agent_over_exporter"] = ratio(m["agent_wall"]["median"],
                                           m["exporter_wall"]["median"])
        checks["agent wall <= exporter scrape"] = out["agent_over_exporter"] <= 1.0
    out["agent_cpu_ms"] = m["agent_cpu"]["median"]
    checks["agent CPU <= 3 ms"] = out["agent_cpu_ms"] <= 3.0
    daemons = {d["targets"]: d for d in r.get("daemon", [])}
    if args.targets in daemons:
        out["peak_rss_mb_with_targets"] = daemons[args.targets]["peak_rss_mb"]
        checks[f"RSS <= 80 MB with {args.targets} targets"] = \
            out["peak_rss_mb_with_targets"] <= 80
    ns = sorted(plain)
    if len(ns) > 1:
        growth: list[dict[str, Any]] = []
        for a, b in itertools.pairwise(ns):
            for key in ("agent_wall", "agent_cpu"):
                growth.append({"from": a, "to": b, "what": key,
                               "cost_ratio": ratio(plain[b]["ms"][key]["median"],
                                                   plain[a]["ms"][key]["median"]),
                               "sessions_ratio": b / a})
        out["growth"] = growth
        checks["growth at most linear"] = all(g["cost_ratio"] <= g["sessions_ratio"]
                                              for g in growth)
    distinct = [v for k, v in results.items() if k.endswith("distinct-apps")]
    if distinct:
        largest = distinct[0]["agent_series"]["largest_metric"]
        out["distinct_apps_largest_metric_series"] = largest
        checks["series within cap with distinct application_names"] = \
            largest <= args.max_groups
    out["checks"] = checks
    return out


def table(results: dict[str, Any], summary: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [("N", "what", "wall median", "wall p95", "client CPU med",
                                    "client CPU p95", "server CPU/op", "series")]
    for name, r in results.items():
        m, srv = r["ms"], r["server_cpu_ms_per_op"]

        def row(label: str, wall: str, cpu: str | None, server: str | None,
                series: str = "", r_m: dict[str, Any] = m,
                srv_: dict[str, float] = srv, n: str = name) -> tuple[str, ...]:
            c = r_m.get(cpu) if cpu else None
            return (n, label, f"{r_m[wall]['median']:.2f} ms", f"{r_m[wall]['p95']:.2f} ms",
                    f"{c['median']:.2f} ms" if c else "-", f"{c['p95']:.2f} ms" if c else "-",
                    f"{srv_[server]:.2f} ms" if server and server in srv_ else "-", series)

        rows.append(row("floor (GROUP BY)", "floor_wall", "floor_cpu", "floor"))
        rows.append(row("agent full poll", "agent_wall", "agent_cpu", "agent",
                        str(r["agent_series"]["total"])))
        rows.append(row("  TargetRunner.poll", "poll_wall", "poll_cpu", None))
        rows.append(row("  SDK collection", "collect_wall", "collect_cpu", None))
        if "exporter_wall" in m:
            rows.append((name, "postgres_exporter", f"{m['exporter_wall']['median']:.2f} ms",
                         f"{m['exporter_wall']['p95']:.2f} ms",
                         f"{r['exporter_cpu_ms_per_scrape']:.2f} ms (mean)", "-",
                         f"{srv['exporter']:.2f} ms" if "exporter" in srv else "-",
                         str(r["exporter_series"])))
        for d in r.get("daemon", []):
            rows.append((name, f"daemon, {d['targets']} target(s)",
                         f"peak RSS {d['peak_rss_mb']:.1f} MB", "",
                         f"{d['cpu_ms_per_poll']:.2f} ms/poll", "(whole process)", "",
                         str(d["metrics_lines"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if summary:
        lines.append("")
        lines.append(f"floors at N = {summary['at_sessions']}: agent/floor "
                     f"{summary['agent_over_floor']:.2f}x"
                     + (f", agent/exporter {summary['agent_over_exporter']:.2f}x"
                        if "agent_over_exporter" in summary else "")
                     + f", agent CPU {summary['agent_cpu_ms']:.2f} ms"
                     + (f", peak RSS {summary['peak_rss_mb_with_targets']:.1f} MB"
                        if "peak_rss_mb_with_targets" in summary else ""))
        for g in summary.get("growth", []):
            lines.append(f"growth {g['what']} {g['from']} -> {g['to']}: x{g['cost_ratio']:.2f} "
                         f"for x{g['sessions_ratio']:.1f} sessions")
        if "distinct_apps_largest_metric_series" in summary:
            lines.append("distinct application_names: largest metric has "
                         f"{summary['distinct_apps_largest_metric_series']} series")
        for check, ok in summary["checks"].items():
            lines.append(f"  [{'ok' if ok else 'FAIL'}] {check}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", default="100,1000,3000",
                   help="comma-separated session counts (default 100,1000,3000)")
    p.add_argument("--reps", type=int, default=200, help="measured rounds per N")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured rounds per N")
    p.add_argument("--targets", type=int, default=10,
                   help="targets of the second daemon RSS measurement (default 10)")
    p.add_argument("--daemon-polls", type=int, default=10,
                   help="polls per target before reading the daemon's RSS")
    p.add_argument("--no-distinct-apps", action="store_true",
                   help="skip the distinct-application_names scenario at the largest N")
    p.add_argument("--no-exporter", action="store_true", help="skip postgres_exporter")
    p.add_argument("--no-rss", action="store_true", help="skip the daemon RSS measurements")
    p.add_argument("--profile", type=int, default=0, metavar="POLLS",
                   help="also cProfile this many agent polls per N (top functions in JSON)")
    p.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/"
                                            "poll_cost-<UTC timestamp>.json)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--exporter-url", help=argparse.SUPPRESS)
    p.add_argument("--exporter-pid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "measure":
        child_measure(args)
        return 0

    from agent.config import Config

    args.max_groups = Config(targets=()).max_groups
    if not args.no_exporter and subprocess.run(["sh", "-c", f"command -v {EXPORTER}"],
                                               capture_output=True).returncode:
        print(f"{EXPORTER} not found: run PGCONN_WITH_PEER=1 bash scripts/setup.sh "
              f"(or pass --no-exporter)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sessions.split(",") if s.strip()]
    scenarios = [Scenario(n) for n in sizes]
    if not args.no_distinct_apps:
        scenarios.append(Scenario(max(sizes), distinct_apps=True))
    started = datetime.now(UTC)
    results: dict[str, Any] = {}
    for sc in scenarios:
        results[sc.name] = run_scenario(sc, args)
    summary = summarize(results, args)
    report = {
        "benchmark": "poll_cost", "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "loadavg_at_end": os.getloadavg()},
        "floor_sql": FLOOR_SQL, "results": results, "summary": summary,
    }
    out = args.out or RESULTS / f"poll_cost-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(results, summary))
    print(f"\nJSON: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
