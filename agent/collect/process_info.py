"""What a local client process is: command, executable, redacted command line, visible driver.

Read from ``/proc/<pid>`` once per process (pid and start time) and kept: a process's maps and
open files are the expensive part of naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROC = Path("/proc")
CMDLINE_CHARS = 160
"""Longest command line reported (after redaction)."""
REDACTED = "***"
_CPUS = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Driver:
    """A PostgreSQL client library and the connections one of its pools holds by default."""

    name: str
    pool_default: int | None
    pool_words: str
    evidence: str
    """How it was seen: ``loaded`` (mapped or open in the process), ``installed`` (in the
    node_modules the script resolves from) or ``cmdline`` (named on the command line)."""


@dataclass(frozen=True, slots=True)
class ClientProcess:
    pid: int
    comm: str
    exe: str | None
    cmdline: str
    driver: Driver | None


_SECRET_FLAG = re.compile(r"^-{1,2}[\w.-]*(password|passwd|pwd|secret|token|key|credential)"
                          r"[\w.-]*$", re.IGNORECASE)
_SECRET_ASSIGN = re.compile(r"((?:password|passwd|pwd|secret|token|apikey|api_key|key|"
                            r"credential)[\w.-]*\s*[=:]\s*)\S+", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)


def redact_argv(argv: Iterable[str]) -> list[str]:
    """Arguments with anything that looks like a secret replaced by ``***``: the value after a
    ``--password``-like flag, ``password=…``/``token=…`` values, and passwords in URIs."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if _SECRET_FLAG.match(flag):
            if eq:
                out.append(f"{flag}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        arg = _URI_PASSWORD.sub(rf"\g<1>{REDACTED}@", arg)
        out.append(_SECRET_ASSIGN.sub(rf"\g<1>{REDACTED}", arg))
    return out


def shown_cmdline(raw: bytes, limit: int = CMDLINE_CHARS) -> str:
    """``/proc/<pid>/cmdline`` (NUL-separated) as one redacted, truncated line."""
    argv = [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0") if a]
    text = " ".join(redact_argv(argv))
    return text if len(text) <= limit else text[:limit - 1] + "…"


# What each library's pool holds by default, and where it shows in a process. Order matters:
# a library that brings its own pool (Prisma, SQLAlchemy, HikariCP) before the bare driver.
_LOADED: tuple[tuple[str, str, int | None, str], ...] = (
    ("libquery_engine", "Prisma (query engine)", _CPUS * 2 + 1,
     f"a Prisma ≤6 client's pool holds num_physical_cpus * 2 + 1 by default "
     f"(connection_limit; {_CPUS * 2 + 1} on this host's {_CPUS} CPUs)"),
    ("sqlalchemy/cyextension", "SQLAlchemy", 15,
     "an SQLAlchemy engine's QueuePool holds at most 15 by default (pool_size 5 + "
     "max_overflow 10)"),
    ("HikariCP", "HikariCP", 10, "a HikariCP pool holds at most 10 by default "
     "(maximumPoolSize)"),
    ("psycopg_pool", "psycopg_pool", 4, "a psycopg_pool ConnectionPool holds 4 by default "
     "(max_size = min_size = 4)"),
    ("psycopg_c", "psycopg 3", None, "psycopg opens one connection per connect() and has no "
     "pool of its own"),
    ("psycopg_binary", "psycopg 3", None, "psycopg opens one connection per connect() and has "
     "no pool of its own"),
    ("psycopg2", "psycopg2", None, "psycopg2 opens one connection per connect(); its pools "
     "are sized by the application"),
    ("libpq.so", "libpq", None, "libpq opens one connection per PQconnectdb() and has no pool"),
    ("postgresql-4", "PostgreSQL JDBC", None, "the JDBC driver alone opens one connection per "
     "getConnection() and has no pool"),
)
_NODE_PACKAGES: tuple[tuple[str, str, int | None, str], ...] = (
    ("@prisma/adapter-pg", "Prisma (adapter-pg)", 10,
     "a Prisma 7 client (adapter-pg, a pg.Pool underneath) holds at most 10 by default"),
    ("pg", "node-postgres", 10, "a node-postgres pool (pg.Pool) holds at most 10 by default "
     "(max)"),
)


def _driver_loaded(pid: int, proc: Path) -> Driver | None:
    """A driver whose library is mapped (shared objects) or open (jars) in the process."""
    seen: set[str] = set()
    try:
        for line in (proc / str(pid) / "maps").read_text().splitlines():
            if "/" in line:
                seen.add(line[line.index("/"):])
    except OSError:
        pass
    fd_dir = proc / str(pid) / "fd"
    try:
        for name in os.listdir(fd_dir):
            try:
                link = os.readlink(fd_dir / name)
            except OSError:
                continue
            if link.startswith("/"):
                seen.add(link)
    except OSError:
        pass
    for needle, name, default, words in _LOADED:
        if any(needle in path for path in seen):
            return Driver(name, default, words, "loaded")
    return None


def _node_driver(pid: int, argv: list[str], proc: Path) -> Driver | None:
    """A Node process: the client package in the node_modules its script resolves from."""
    if not argv or not os.path.basename(argv[0]).startswith("node"):
        return None
    script = next((a for a in argv[1:] if not a.startswith("-")), None)
    starts: list[Path] = []
    try:
        cwd = Path(os.readlink(proc / str(pid) / "cwd"))
    except OSError:
        cwd = None
    if script is not None:
        path = Path(script) if Path(script).is_absolute() or cwd is None else cwd / script
        starts.append(path.parent)
    if cwd is not None:
        starts.append(cwd)
    for start in starts:
        for folder in (start, *start.parents):
            for package, name, default, words in _NODE_PACKAGES:
                if (folder / "node_modules" / package / "package.json").is_file():
                    return Driver(name, default, words, "installed")
    return None


def _driver_named(argv: list[str]) -> Driver | None:
    """A driver named on the command line only (a classpath entry, a script's name)."""
    text = " ".join(argv)
    for needle, name, default, words in _LOADED:
        if needle in text:
            return Driver(name, default, words, "cmdline")
    return None


def describe(pid: int, proc: Path = PROC) -> ClientProcess | None:
    """Command name, executable, redacted command line and visible driver of a process.

    Remembered per process (pid and start time): reading its maps and open files again on every
    poll would cost more than the rest of the attribution.
    """
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    start = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22, after "(comm)"
    return _describe(pid, start, proc)


@lru_cache(maxsize=1024)
def _describe(pid: int, start: int, proc: Path) -> ClientProcess | None:
    base = proc / str(pid)
    try:
        comm = (base / "comm").read_text().strip()
        raw = (base / "cmdline").read_bytes()
    except OSError:
        return None
    try:
        exe: str | None = os.readlink(base / "exe")
    except OSError:
        exe = None
    argv = [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0") if a]
    driver = _driver_loaded(pid, proc) or _node_driver(pid, argv, proc) or _driver_named(argv)
    return ClientProcess(pid, comm, exe, shown_cmdline(raw), driver)
