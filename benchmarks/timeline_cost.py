"""What time in the diagnosis costs (issue 11): the rolling history's memory and CPU, and the
``diagnose`` window against one snapshot on a real server.

    .venv/bin/python benchmarks/timeline_cost.py [--sessions 1000] [--holders 20,200]

1. History (pure, synthetic polls): a daemon's 15-minute history at one sample per second
   (900 samples; fed 4 polls a second, so merging is exercised) with H holders per poll:
   retained memory (tracemalloc), CPU per ``add``, per ``churn`` over the last minute, and per
   full diagnosis (what ``GET /diagnose`` computes per target).
2. Window (real PostgreSQL 15, N sessions of 40 applications): ``report_for`` with ``--window 0``
   and with the default 5 s window: wall, client CPU (process time) and polls.
Prints a table and writes ``benchmarks/results/timeline_cost-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent import config as cfg
from agent.aggregate.attribution import Attribution, attribute
from agent.aggregate.history import History
from agent.collect.snapshot import ActivityGroup, DatabaseSessions, Setting, Snapshot
from agent.demo.server import LocalServer
from agent.demo.workload import Workload
from agent.diagnose.findings import diagnose
from agent.diagnose.run import DEFAULT_WINDOW_S, report_for

RESULTS = Path(__file__).resolve().parent / "results"
START = datetime(2026, 12, 1, tzinfo=UTC)
SETTINGS = (Setting("max_connections", 5000, ""), Setting("superuser_reserved_connections", 3, ""))


def synthetic(i: int, holders: int) -> Attribution:
    """Poll ``i`` (a quarter second apart): ``holders`` applications, some opening backends."""
    groups = tuple(ActivityGroup("shop", "app", f"app-{h}", f"10.0.{h // 250}.{h % 250}", state,
                                 5, 12.0, None, (i + h) % 3 if state == "active" else 0, 1)
                   for h in range(holders) for state in ("idle", "active"))
    snap = Snapshot("db1", START + timedelta(seconds=i / 4), 150000, {
        "settings": SETTINGS, "activity_groups": groups,
        "databases": (DatabaseSessions("shop", 1000 + i * 3, 0, 0, 0),)})
    return attribute(snap)


def history_cost(holders: int) -> dict[str, Any]:
    polls = [synthetic(i, holders) for i in range(3600)]  # 15 min at 4 polls/s
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = History()
    add_s: list[float] = []
    for a in polls:
        t0 = time.process_time()
        history.add(a)
        add_s.append(time.process_time() - t0)
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    churn_s, diag_s = [], []
    for _ in range(20):
        t0 = time.process_time()
        history.churn(60.0)
        churn_s.append(time.process_time() - t0)
        t0 = time.process_time()
        diagnose(polls[-1], history=history)
        diag_s.append(time.process_time() - t0)
    return {"holders": holders, "samples": len(history), "seconds": history.seconds(),
            "retained_bytes": retained, "add_ms": 1000 * statistics.median(add_s),
            "churn_last_minute_ms": 1000 * statistics.median(churn_s),
            "diagnose_ms": 1000 * statistics.median(diag_s)}


def window_cost(sessions: int) -> list[dict[str, Any]]:
    out = []
    with LocalServer(max_connections=sessions + 30) as server, \
            Workload(server.dsn(), server.dsn(via="unix")) as work:
        for i in range(40):
            work.idle(sessions // 40, f"app-{i}")
        config = cfg.load(None, {"dsns": [server.dsn()]})
        for window in (0.0, DEFAULT_WINDOW_S):
            runs = []
            for _ in range(3):
                t0, c0 = time.monotonic(), time.process_time()
                report = report_for(config, 0, window=window)
                runs.append((time.monotonic() - t0, time.process_time() - c0))
            assert report.attribution is not None
            out.append({"window_s": window, "wall_s": statistics.median(r[0] for r in runs),
                        "client_cpu_ms": 1000 * statistics.median(r[1] for r in runs),
                        "observed_s": report.observed, "sessions": sessions})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--holders", default="20,200")
    args = p.parse_args()
    hist = [history_cost(int(h)) for h in args.holders.split(",")]
    print("History: 15 min at 1 sample/s, fed 4 polls/s")
    print("holders  samples  retained    add/poll   churn(1 min)  diagnose")
    for r in hist:
        print(f"{r['holders']:>7}  {r['samples']:>7}  {r['retained_bytes'] / 1e6:>6.2f} MB"
              f"  {r['add_ms']:>6.3f} ms  {r['churn_last_minute_ms']:>9.2f} ms"
              f"  {r['diagnose_ms']:>6.2f} ms")
    win = window_cost(args.sessions)
    print(f"\ndiagnose at N = {args.sessions} (40 applications), median of 3")
    print("window  wall     client CPU  observed")
    for r in win:
        print(f"{r['window_s']:>5.1f}s  {r['wall_s']:>5.2f} s  {r['client_cpu_ms']:>7.1f} ms"
              f"  {r['observed_s']:>5.1f} s")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"timeline_cost-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"history": hist, "window": win}, indent=2) + "\n")
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
