"""PgBouncer side by side: pgconn-agent's PgBouncer target vs prometheus-pgbouncer-exporter.

Run (from a clean clone)::

    bash scripts/setup.sh && PGCONN_WITH_PEER=1 bash scripts/setup.sh \
        && .venv/bin/python benchmarks/pgbouncer_peer.py --clients 100,800

For every N this starts a throwaway PostgreSQL (agent.demo.server) and a PgBouncer in front of
it (tests/pooler_support.py: transaction mode, pool_size 20), then builds the issue's situation: the
pool is at its size (application ``billing`` holds a row lock idle in transaction, 18
``report`` clients sit idle in transaction, one ``web`` client is blocked on billing's lock),
``--waiting`` more ``web`` clients queue in PgBouncer, and the rest of the N clients are
connected and idle over 40 application names. Debian's prometheus-pgbouncer-exporter scrapes the
same console. Interleaved in random order, ``--rounds`` times:

* agent: ``ConsoleClient.poll()`` + ``pooler_points()`` (what the daemon does per PgBouncer
  target): wall and the agent thread's CPU;
* join: the server target's ``TargetRunner.poll()`` with the PgBouncer snapshot on the board
  (its ``pairings_for`` + ``relabel``), and the pure join alone;
* exporter: one ``/metrics`` scrape: wall and the exporter's CPU from ``/proc``.

PgBouncer's own CPU per poll/scrape is read from ``/proc`` too. It then records what each shows
of the situation: the waiting count, the longest wait, who waits, who holds the pool, and the
series each exports. Prints a table and writes JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from poll_cost import RESULTS, clean_env, cpu_seconds, get, ms, wait_until  # noqa: E402
from pooler_support import LOCK_TABLE, MONITOR_ROLE, LocalBouncer, PooledClients  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from agent import contract as c  # noqa: E402
from agent.aggregate.join import pairings_for, relabel  # noqa: E402
from agent.aggregate.pooler import pooler_points  # noqa: E402
from agent.collect.client import TargetClient  # noqa: E402
from agent.collect.pgbouncer.board import PoolerBoard  # noqa: E402
from agent.collect.pgbouncer.console import ConsoleClient  # noqa: E402
from agent.collect.snapshot import Snapshot  # noqa: E402
from agent.config import Config, Target  # noqa: E402
from agent.daemon import TargetRunner  # noqa: E402
from agent.demo.server import LocalServer, free_port  # noqa: E402
from agent.demo.workload import Workload  # noqa: E402
from agent.diagnose.pooler import pooler_findings  # noqa: E402
from agent.export.state import MetricsState  # noqa: E402

EXPORTER = "prometheus-pgbouncer-exporter"
SHIM = """
import sys
from prometheus_pgbouncer_exporter import cli, collectors, utils
_, host, port, user = sys.argv[:4]
conn = utils.get_connection(user, port, host)
columns = set(utils.get_data_by_named_column(conn, "STATS")[0])
conn.close()
stats = collectors.StatsCollector
dropped = sorted(set(stats.metrics) - columns)
stats.metrics = {k: v for k, v in stats.metrics.items() if k in columns}
print("dropped:", *dropped, file=sys.stderr, flush=True)
sys.argv = [sys.argv[0], *sys.argv[4:]]
cli.main()
"""
"""Debian's exporter 1.7 reads SHOW STATS' ``total_requests``, which PgBouncer 1.8 renamed: as
packaged it dies at start against PgBouncer 1.18 (KeyError). The shim runs the same exporter
with the StatsCollector columns PgBouncer no longer has left out, so its cost can be measured."""
POOL_SIZE = 20
REPORTERS = POOL_SIZE - 2  # with billing's holder and the blocked web client: the pool is full
APPS = 40


@dataclass(frozen=True, slots=True)
class Peer:
    url: str
    pid: int
    packaged_exit: int
    packaged_error: str
    dropped: list[str]


@contextmanager
def exporter(bouncer: LocalBouncer) -> Iterator[Peer]:
    """Debian's prometheus-pgbouncer-exporter on a free port, as the console's stats user."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        args = ["--host", "127.0.0.1", "--port", str(port), "--pgbouncer-host", "127.0.0.1",
                "--pgbouncer-port", str(bouncer.port), "--pgbouncer-user", MONITOR_ROLE]
        as_packaged = subprocess.run([EXPORTER, *args], env=clean_env(), capture_output=True,
                                     text=True, timeout=30, check=False)
        crash = (as_packaged.stderr.strip().splitlines() or [""])[-1]
        proc = subprocess.Popen(
            ["/usr/bin/python3", "-c", SHIM, "127.0.0.1", str(bouncer.port), MONITOR_ROLE,
             *args], env=clean_env(), stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            try:
                wait_until(lambda: b"pgbouncer_" in get(url), 30, EXPORTER)
            except TimeoutError:
                log.seek(0)
                raise TimeoutError(f"{EXPORTER}: {log.read()[-2000:].decode()}") from None
            log.seek(0)
            dropped = log.readline().decode().removeprefix("dropped:").split()
            yield Peer(url, proc.pid, as_packaged.returncode, crash, dropped)
        finally:
            proc.terminate()
            proc.wait(10)


def situation(server: LocalServer, bouncer: LocalBouncer, clients: PooledClients,
              work: Workload, n: int, waiting: int) -> None:
    server.execute(f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} (id int PRIMARY KEY, v int)",
                   f"INSERT INTO {LOCK_TABLE} VALUES (1, 0) ON CONFLICT DO NOTHING")
    clients.hold_row_lock("billing")
    for _ in range(REPORTERS):
        conn = clients.connect("report")
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
    clients.in_background(1, "web", f"UPDATE {LOCK_TABLE} SET v = v + 1 WHERE id = 1")
    wait_until(lambda: server.execute("SELECT count(*) FROM pg_stat_activity "
                                      "WHERE wait_event_type = 'Lock'")[0][0] == 1,
               30, "the web client blocked on billing's lock")
    clients.in_background(waiting, "web", "SELECT 1")
    idle = n - REPORTERS - 2 - waiting
    for i in range(APPS):
        share = idle // APPS + (1 if i < idle % APPS else 0)
        if share:
            work.idle(share, f"svc-{i:02d}")

    def ready() -> bool:
        s = ConsoleClient(Target("check", bouncer.console_dsn()))
        try:
            snap = s.poll()
        finally:
            s.close()
        return (sum(p.cl_waiting for p in snap.pools) == waiting and len(snap.clients) == n)

    wait_until(ready, 120, f"{n} clients, {waiting} waiting")


def timed(op: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    op()
    return time.perf_counter() - wall, time.thread_time() - cpu


def run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    server = LocalServer(max_connections=100).start()
    bouncer = LocalBouncer(server, pool_size=POOL_SIZE, max_client_conn=n + 50).start()
    clients, work = PooledClients(bouncer.dsn()), Workload(bouncer.dsn())
    try:
        situation(server, bouncer, clients, work, n, args.waiting)
        with exporter(bouncer) as peer:
            out = measure(server, bouncer, peer.url, peer.pid, n, args)
            out["peer_as_packaged"] = {"exit": peer.packaged_exit,
                                       "error": peer.packaged_error,
                                       "shim_dropped": peer.dropped}
            return out
    finally:
        clients.close()
        work.close()
        bouncer.stop()
        server.stop()


def measure(server: LocalServer, bouncer: LocalBouncer, url: str, exporter_pid: int, n: int,
            args: argparse.Namespace) -> dict[str, Any]:
    console = ConsoleClient(Target("pgb", bouncer.console_dsn()))
    board, config = PoolerBoard(), Config(targets=())
    db = TargetRunner(Target("db", server.dsn()), config, MetricsState(), board)
    direct = TargetClient(Target("db", server.dsn()))
    samples: dict[str, list[float]] = {k: [] for k in (
        "agent_wall", "agent_cpu", "agent_pgbouncer_cpu", "exporter_wall", "exporter_cpu",
        "exporter_pgbouncer_cpu", "server_poll_joined_wall", "server_poll_alone_wall",
        "join_wall")}

    def poll_pooler() -> None:
        snapshot = console.poll()
        board.put(snapshot)
        pooler_points(snapshot)

    def agent() -> None:
        before = cpu_seconds(bouncer.pid)
        wall, cpu = timed(poll_pooler)
        samples["agent_wall"].append(wall)
        samples["agent_cpu"].append(cpu)
        samples["agent_pgbouncer_cpu"].append(cpu_seconds(bouncer.pid) - before)

    def scrape() -> None:
        before, pgb = cpu_seconds(exporter_pid), cpu_seconds(bouncer.pid)
        wall, _ = timed(lambda: get(url))
        samples["exporter_wall"].append(wall)
        samples["exporter_cpu"].append(cpu_seconds(exporter_pid) - before)
        samples["exporter_pgbouncer_cpu"].append(cpu_seconds(bouncer.pid) - pgb)

    def joined() -> None:
        samples["server_poll_joined_wall"].append(timed(db.poll)[0])
        polled: list[Snapshot] = []
        samples["server_poll_alone_wall"].append(timed(lambda: polled.append(direct.poll()))[0])
        samples["join_wall"].append(timed(lambda: relabel(polled[0], pairings_for(
            polled[0], server.dsn(), board.latest())))[0])

    agent()
    ops = [agent, scrape, joined] * args.rounds
    random.shuffle(ops)
    for op in ops:
        op()
    shows = what_each_shows(console.poll(), get(url).decode(), board, server, db)
    console.close()
    db.close()
    direct.close()
    return {"clients": n, "waiting": args.waiting, "pool_size": POOL_SIZE,
            "wall_ms": {k: ms(v) for k, v in samples.items() if k.endswith("wall")},
            "cpu_ms": {k: ms(v) for k, v in samples.items() if k.endswith("cpu")},
            "shows": shows}


def what_each_shows(snapshot: Any, body: str, board: PoolerBoard, server: LocalServer,
                    db: TargetRunner) -> dict[str, Any]:
    families = list(text_string_to_metric_families(body))
    peer_samples = [s for f in families for s in f.samples]
    peer_labels = sorted({k for s in peer_samples for k in s.labels})
    waiting = [s.value for s in peer_samples if s.name == "pgbouncer_waiting_clients"
               and s.labels.get("database") == "postgres"]
    maxwait = [s.value for s in peer_samples if "maxwait" in s.name]
    points = pooler_points(snapshot).points
    [finding] = [f for f in pooler_findings(snapshot) if f.code == "pgbouncer_pool_waiting"]
    direct = TargetClient(Target("db", server.dsn()))
    snap = direct.poll()
    direct.close()
    pairings = pairings_for(snap, server.dsn(), board.latest())
    blocker = next(s for s in relabel(snap, pairings).sessions if s.locks_held and
                   not s.blocking_pids)
    return {
        "peer": {"series": len(peer_samples), "families": len(families),
                 "labels": peer_labels, "waiting": waiting, "maxwait": maxwait,
                 "names_clients": any(k in peer_labels for k in ("application_name", "addr",
                                                                  "client_addr"))},
        "agent": {"series": sum(len(v) for v in points.values()),
                  "waiting": [v for a, v in points[c.POOLER_CLIENTS.name]
                              if dict(a)["state"] == "waiting"],
                  "maxwait": [v for _, v in points[c.POOLER_WAIT_MAX.name]],
                  "finding": finding.title, "waiting_applications":
                      finding.data["waiting_applications"],
                  "lock_holder_alone": next(s.client_addr for s in snap.sessions
                                            if s.pid == blocker.pid),
                  "lock_holder_joined": f"{blocker.application_name} from "
                                        f"{blocker.client_addr}"},
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = ["clients  what                         wall median/p95 ms   CPU median ms  "
             "PgBouncer CPU ms"]
    for r in results:
        w, u = r["wall_ms"], r["cpu_ms"]
        lines += [
            f"{r['clients']:>7}  agent (console poll+points) {w['agent_wall']['median']:8.2f} /"
            f"{w['agent_wall']['p95']:7.2f}   {u['agent_cpu']['median']:8.2f}       "
            f"{u['agent_pgbouncer_cpu']['mean']:6.2f}",
            f"{r['clients']:>7}  peer exporter scrape        "
            f"{w['exporter_wall']['median']:8.2f} /{w['exporter_wall']['p95']:7.2f}   "
            f"{u['exporter_cpu']['mean']:8.2f}*      {u['exporter_pgbouncer_cpu']['mean']:6.2f}",
            f"{r['clients']:>7}  server poll alone / joined  "
            f"{w['server_poll_alone_wall']['median']:8.2f} / "
            f"{w['server_poll_joined_wall']['median']:6.2f}   join alone "
            f"{w['join_wall']['median']:.3f} ms"]
    lines.append("* mean: /proc CPU ticks are 10 ms, so the median of single scrapes is 0")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,800",
                        help="comma-separated client counts through PgBouncer")
    parser.add_argument("--waiting", type=int, default=20, help="clients queued in PgBouncer")
    parser.add_argument("--rounds", type=int, default=60, help="measurements of each kind")
    args = parser.parse_args()
    results = [run(int(n), args) for n in args.clients.split(",")]
    print(table(results))
    for r in results:
        print(json.dumps({"clients": r["clients"], **r["shows"],
                          "peer_as_packaged": r["peer_as_packaged"]}, indent=1, default=str))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pgbouncer_peer-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "args": vars(args),
                               "results": results}, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
