"""A process's resident memory, open file descriptors and threads, read from /proc: what the
long-running and storm tests (and benchmarks/stall_soak.py) watch stay flat."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcStats:
    """One reading of ``/proc/<pid>/status`` and ``/proc/<pid>/fd``."""

    rss_kb: int
    fds: int
    threads: int


def proc_stats(pid: int | str = "self") -> ProcStats:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ProcStats(rss_kb=int(fields["VmRSS"].split()[0]),
                     fds=len(os.listdir(f"/proc/{pid}/fd")),
                     threads=int(fields["Threads"].strip()))
