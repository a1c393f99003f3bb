"""``pgconn-agent demo``: the pool really fills the server (the next connection is refused, the
agent keeps seeing everything), and SIGTERM during ``--keep`` leaves no server or directory
behind. Runs the installed command on real throwaway servers; about 25 s.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from agent_e2e import AGENT, clean_env, wait_until

from agent.demo.server import find_bindir


def postgres_pids(datadir: Path) -> list[int]:
    """Processes whose command line names ``datadir`` (the postmaster)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(datadir).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


class Demo:
    """``pgconn-agent demo ARGS``; remembers its data directory to clean up after a failure."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([str(AGENT), "demo", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=clean_env())
        self.datadir: Path | None = None

    def lines(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            found = re.search(r"data directory (\S+)", line)
            self.datadir = Path(found.group(1)) if found else self.datadir
            yield line

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.datadir is not None and self.datadir.exists():  # failed: leave nothing behind
            subprocess.run(["runuser", "-u", "postgres", "--", str(find_bindir() / "pg_ctl"),
                            "-D", str(self.datadir), "stop", "-m", "immediate"], check=False,
                           capture_output=True)
            shutil.rmtree(self.datadir.parent, ignore_errors=True)


def test_demo_fills_the_server_and_the_agent_still_sees_it() -> None:
    with Demo("--polls", "1") as run:
        out = "".join(run.lines())
        assert run.proc.wait(120) == 0, out
    assert "then the server refuses the next one" in out
    assert "remaining connection slots are reserved" in out  # the server's own refusal
    polls = out.split("\npoll ")
    assert re.search(r"postgresql_connection_utilization_ratio\{[^}]*\} 1\.0\n", polls[-1]), out
    assert re.search(r"pgconn_agent_up\{[^}]*\} 1\.0\n", polls[-1]), out
    assert "CRITICAL  Connection slots exhausted" in out


def test_demo_keep_stopped_by_sigterm_removes_server_and_directory() -> None:
    with Demo("--keep", "--polls", "1") as run:
        for line in run.lines():
            if line.startswith("Agent running"):
                break
        datadir = run.datadir
        assert datadir is not None and datadir.exists()
        assert postgres_pids(datadir)
        run.proc.send_signal(signal.SIGTERM)
        rest = "".join(run.lines())
        assert run.proc.wait(60) == 0, rest
        assert "Demo finished" in rest
        assert not datadir.parent.exists()
        wait_until(lambda: not postgres_pids(datadir), timeout=10,
                   what="the demo's PostgreSQL to exit")
