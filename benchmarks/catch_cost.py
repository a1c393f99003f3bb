"""What a churn catch burst costs the server and the agent, beside one regular poll.

    .venv/bin/python benchmarks/catch_cost.py [--sessions 1000] [--bursts 20]

On a throwaway PostgreSQL 15 holding poll_cost.py's session mix (N sessions: idle, idle in
transaction, lock chains), one agent connection alternates a regular poll and a full catch
burst (``agent.collect.catch``: up to 50 samples, 1 s), first with no churn (nothing to catch:
every sample runs, the most a burst costs) and then beside a client churning 15 connections/s
whose sessions live ~5-10 ms. Server CPU is the backend's ``/proc/<pid>/stat`` over the runs;
CLK_TCK is 10 ms, so runs are long enough for it to count.
"""

from __future__ import annotations

import argparse
import statistics
import time

from poll_ab import backend_cpu_ticks
from poll_cost import Scenario, open_sessions, prepare

from agent.collect import catch
from agent.collect.client import TargetClient
from agent.config import Target
from agent.demo.server import LocalServer
from agent.demo.workload import Workload


def run(agent: TargetClient, bursts: int) -> dict[str, float]:
    polls_ticks = burst_ticks = 0
    walls, cpus, caught = [], [], []
    for _ in range(bursts):
        t0 = backend_cpu_ticks(agent)
        agent.poll()
        t1 = backend_cpu_ticks(agent)
        w0, c0 = time.perf_counter(), time.thread_time()
        got = agent.catch(catch.budget(15.0))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.thread_time() - c0)
        polls_ticks += t1 - t0
        burst_ticks += backend_cpu_ticks(agent) - t1
        caught.append(len(got))
    return {"poll server ms": 10 * polls_ticks / bursts,
            "burst server ms": 10 * burst_ticks / bursts,
            "burst wall s": statistics.median(walls),
            "burst client CPU ms": 1000 * statistics.median(cpus),
            "caught per burst": statistics.mean(caught)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--bursts", type=int, default=20)
    args = p.parse_args()
    results = {}
    with LocalServer(max_connections=args.sessions + 70) as server:
        prepare(server)
        with Workload(server.dsn(), server.dsn(via="unix")) as work:
            open_sessions(server, work, Scenario(args.sessions))
            agent = TargetClient(Target("bench", server.dsn()))
            agent.poll()
            results["no churn"] = run(agent, args.bursts)
            with Workload(server.dsn(), server.dsn(via="unix")) as churn:
                churn.churn("churner", 15, query_seconds=0.005)
                results["15/s churn, ~5-10 ms sessions"] = run(agent, args.bursts)
            agent.close()
    print(f"N = {args.sessions}, {args.bursts} poll + burst rounds each")
    keys = list(next(iter(results.values())))
    print(f"{'':<32}" + "".join(f"{k:>22}" for k in keys))
    for name, row in results.items():
        print(f"{name:<32}" + "".join(f"{row[k]:>22.2f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
