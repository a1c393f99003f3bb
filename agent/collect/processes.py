"""Which local process owns a client socket, read from Linux ``/proc``.

PostgreSQL knows each connection's ``(client_addr, client_port)``; the kernel of the client's
host knows which process owns that socket. When the agent runs on that host (or in its network
namespace), ``/proc/net/tcp{,6}`` maps the address pair to a socket inode and
``/proc/<pid>/fd`` maps the inode to a process. Reading other users' ``fd`` folders needs root or
CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH; without them such processes stay unresolved and are
counted.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
CMDLINE_CHARS = 160
"""Longest command line reported (after redaction)."""
REDACTED = "***"
_LISTEN = 0x0A
_CPUS = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One row of ``/proc/net/tcp`` or ``tcp6``; addresses normalised (IPv4-mapped unwrapped)."""

    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    state: int
    inode: int


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


@dataclass(frozen=True, slots=True)
class HostProcesses:
    """What one read of ``/proc`` found for the connections of this host's clients."""

    owners: dict[tuple[str, int], int] = field(default_factory=dict)
    """(client address, client port) -> pid of the process owning that socket."""
    processes: dict[int, ClientProcess] = field(default_factory=dict)
    unreadable: int = 0
    """Processes whose ``fd`` folder the agent may not read (it lacks CAP_SYS_PTRACE)."""


def normalise(address: str) -> str:
    """An address as PostgreSQL's ``host()`` prints it, IPv4-mapped IPv6 unwrapped."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _hex_address(text: str) -> str:
    """The kernel prints each 32-bit word of an address in host byte order."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return normalise(str(ipaddress.ip_address(raw)))


def parse_tcp(text: str) -> list[TcpSocket]:
    """Rows of ``/proc/net/tcp`` or ``/proc/net/tcp6`` (the header line is skipped)."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        local, remote = f[1].split(":"), f[2].split(":")
        out.append(TcpSocket(_hex_address(local[0]), int(local[1], 16),
                             _hex_address(remote[0]), int(remote[1], 16),
                             int(f[3], 16), int(f[9])))
    return out


def tcp_sockets(proc: Path = PROC) -> list[TcpSocket]:
    """This network namespace's TCP sockets, both families (a missing family is skipped)."""
    out: list[TcpSocket] = []
    for name in ("tcp", "tcp6"):
        try:
            out += parse_tcp((proc / "net" / name).read_text())
        except OSError:
            continue
    return out


_FIB_LOCAL = re.compile(r"\|-- (\S+)\n\s+/(\d+) host LOCAL")


def local_networks(proc: Path = PROC) -> tuple[str, ...]:
    """This host's own addresses as CIDR networks (``127.0.0.0/8`` is one), for the poll's
    filter: only connections from these addresses can belong to a local process."""
    nets: set[str] = set()
    try:
        for addr, bits in _FIB_LOCAL.findall((proc / "net" / "fib_trie").read_text()):
            nets.add(f"{addr}/{bits}")
            nets.add(f"::ffff:{addr}/{96 + int(bits)}")
    except OSError:  # no IPv4 in this namespace, or /proc not readable: nothing is local
        pass
    try:
        for line in (proc / "net" / "if_inet6").read_text().splitlines():
            hexaddr = line.split()[0]
            nets.add(f"{ipaddress.IPv6Address(bytes.fromhex(hexaddr))}/128")
    except OSError:
        pass
    return tuple(sorted(nets))


def socket_owners(inodes: set[int], proc: Path = PROC) -> tuple[dict[int, int], int]:
    """inode -> pid for the wanted socket inodes, and how many processes were unreadable.

    Stops as soon as every inode is found: at 1,000 connections the scan reads each process's
    ``fd`` links once.
    """
    owners: dict[int, int] = {}
    unreadable = 0
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        fd_dir = f"{entry.path}/fd"
        try:
            names = os.listdir(fd_dir)
        except PermissionError:
            unreadable += 1
            continue
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
        pid = int(entry.name)
        for name in names:
            try:
                link = os.readlink(f"{fd_dir}/{name}")
            except PermissionError:  # listing allowed (CAP_DAC_READ_SEARCH), links not
                unreadable += 1
                break
            except OSError:
                continue
            if link.startswith("socket:["):
                inode = int(link[8:-1])
                if inode in inodes:
                    owners[inode] = pid
        if len(owners) == len(inodes):
            break
    return owners, unreadable


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


def describe(pid: int, proc: Path = PROC) -> ClientProcess | None:
    """Command name, executable, redacted command line and visible driver of a process."""
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
    driver = _driver_loaded(pid, proc) or _node_driver(pid, argv, proc)
    return ClientProcess(pid, comm, exe, shown_cmdline(raw), driver)


def read_host(clients: Iterable[tuple[str, int]], proc: Path = PROC) -> HostProcesses:
    """Owners of the given (client address, client port) sockets, with their processes."""
    wanted = {(normalise(addr), port) for addr, port in clients}
    if not wanted:
        return HostProcesses()
    try:
        return _read_host(wanted, proc)
    except OSError:  # /proc vanished or became unreadable: attribution, never the poll, fails
        return HostProcesses()


def _read_host(wanted: set[tuple[str, int]], proc: Path) -> HostProcesses:
    inode_of = {(s.local_addr, s.local_port): s.inode for s in tcp_sockets(proc)
                if s.state != _LISTEN and s.inode and (s.local_addr, s.local_port) in wanted}
    pids, unreadable = socket_owners(set(inode_of.values()), proc)
    owners = {key: pids[inode] for key, inode in inode_of.items() if inode in pids}
    processes = {}
    for pid in set(owners.values()):
        described = describe(pid, proc)
        if described is not None:
            processes[pid] = described
    return HostProcesses(owners, processes, unreadable)
