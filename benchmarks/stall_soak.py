"""Soak: a target whose backend keeps freezing, beside a healthy one, with reloads (issue 10).

Run::

    .venv/bin/python benchmarks/stall_soak.py --seconds 600

Starts a throwaway PostgreSQL and ``pgconn-agent run`` (interval ``--interval``) with two
targets on it: ``good`` (database postgres) and ``stalls`` (database template1). Every cycle
SIGSTOPs the ``stalls`` target's backend for ``--stop`` seconds, then SIGCONTs it, and records
the seconds from SIGSTOP to ``pgconn_agent_up 0``, to the ``timeout`` poll error, and to
``up 1`` again (a new connection, the old backend still stopped); every third cycle sends
SIGHUP. ``good`` is scraped throughout: its
``up`` must never read 0. Process RSS, fds and threads are read after the first cycle and at
the end; the run ends with SIGTERM during a freeze (seconds to exit). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent_e2e import Agent, agent_backends, stopped, wait_until  # noqa: E402
from process_stats import proc_stats  # noqa: E402

from agent import contract as c  # noqa: E402
from agent.demo.server import LocalServer  # noqa: E402

UP = c.AGENT_UP.prometheus_name
ERRORS = c.POLL_ERRORS.prometheus_name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600, help="length of the soak")
    p.add_argument("--interval", type=float, default=1.0, help="the agent's poll interval")
    p.add_argument("--stop", type=float, default=12.0, help="seconds each freeze lasts")
    args = p.parse_args()

    with LocalServer() as server, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agent.toml"
        config.write_text(f'[agent]\ninterval = {args.interval}\nlisten = "127.0.0.1:0"\n\n'
                          f'[[targets]]\nname = "good"\ndsn = "{server.dsn()}"\n\n'
                          f'[[targets]]\nname = "stalls"\n'
                          f'dsn = "{server.dsn(dbname="template1")}"\n')
        with Agent(["--config", str(config)]) as agent:
            agent.started()
            good_down = 0
            to_down, to_error, to_up = [], [], []

            def up(target: str) -> float | None:
                nonlocal good_down
                good = agent.value(UP, target="good")
                good_down += good == 0
                return agent.value(UP, target=target)

            def wait(predicate_target: str, value: float, timeout: float) -> float:
                start = time.monotonic()
                wait_until(lambda: up(predicate_target) == value, timeout,
                           f"up {value} of {predicate_target}", every=0.05)
                return time.monotonic() - start

            wait("stalls", 1.0, 30)
            begin, cycle, first = time.monotonic(), 0, None
            while time.monotonic() - begin < args.seconds:
                [pid] = wait_until(lambda: agent_backends(server, "template1"), 15, "backend")
                errors = agent.value(ERRORS, target="stalls", error="timeout") or 0
                with stopped(pid):
                    start = time.monotonic()
                    to_down.append(wait("stalls", 0.0, 60))
                    wait_until(lambda e=errors: (agent.value(ERRORS, target="stalls",
                                                             error="timeout") or 0) > e,
                               60, "the timeout error", every=0.05)
                    to_error.append(time.monotonic() - start)
                    wait("stalls", 1.0, 60)
                    to_up.append(time.monotonic() - start)
                    time.sleep(max(0.0, args.stop - (time.monotonic() - start)))
                wait("stalls", 1.0, 60)
                cycle += 1
                if cycle % 3 == 0:
                    agent.signal(signal.SIGHUP)
                if first is None:
                    first = proc_stats(agent.proc.pid)
            last = proc_stats(agent.proc.pid)
            [pid] = wait_until(lambda: agent_backends(server, "template1"), 15, "backend")
            with stopped(pid):
                time.sleep(args.interval * 2)
                code, took = agent.stop(timeout=30)

    def summary(xs: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(xs), 2), "max": round(max(xs), 2)}

    print(json.dumps({
        "seconds": args.seconds, "interval_s": args.interval, "freezes": cycle,
        "sigstop_to_up0_s": summary(to_down), "sigstop_to_timeout_error_s": summary(to_error),
        "sigstop_to_up1_again_s": summary(to_up), "good_target_up0_samples": good_down,
        "after_first_cycle": vars(first) if first else None, "at_end": vars(last),
        "sigterm_during_freeze": {"exit_code": code, "seconds": round(took, 2)},
    }, indent=2))


if __name__ == "__main__":
    main()
