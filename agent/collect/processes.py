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
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..contract import LOCAL_CLIENT
from .sock_diag import connected_stream_sockets, tcp_local_ends

log = logging.getLogger(__name__)
_FAILURES_LOGGED: set[str] = set()
"""Kinds of failure already logged: one line each, not one per poll."""
PROC = Path("/proc")
CMDLINE_CHARS = 160
"""Longest command line reported (after redaction)."""
REDACTED = "***"
_LISTEN = "0A"
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


@dataclass(frozen=True, slots=True)
class HostProcesses:
    """What one read of ``/proc`` found for the connections of this host's clients."""

    owners: dict[tuple[str, int], int] = field(default_factory=dict)
    """``connection_key`` -> pid of the process owning the client's socket."""
    processes: dict[int, ClientProcess] = field(default_factory=dict)
    unreadable: int = 0
    """Processes whose ``fd`` folder the agent may not read (it lacks CAP_SYS_PTRACE)."""


@lru_cache(maxsize=1024)
def normalise(address: str) -> str:
    """An address as PostgreSQL's ``host()`` prints it, IPv4-mapped IPv6 unwrapped."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def kernel_hex(address: str, port: int) -> tuple[str, ...]:
    """How ``/proc/net/tcp{,6}`` print a local address and port: each 32-bit word of the address
    in host byte order, in hex. An IPv4 client may own an IPv4 socket (``tcp``) or an IPv4-mapped
    one on a dual-stack IPv6 socket (``tcp6``): both forms."""
    return tuple(f"{form}:{port:04X}" for form in _address_hex(address))


@lru_cache(maxsize=256)
def _address_hex(address: str) -> tuple[str, ...]:
    ip = ipaddress.ip_address(normalise(address))
    forms = [ip.packed]
    if isinstance(ip, ipaddress.IPv4Address):
        forms.append(ipaddress.IPv6Address(f"::ffff:{ip}").packed)
    out = []
    for raw in forms:
        if sys.byteorder == "little":
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        out.append(raw.hex().upper())
    return tuple(out)


def socket_inodes(wanted: Iterable[tuple[str, int]], server_port: int | None = None,
                  proc: Path = PROC) -> dict[tuple[str, int], tuple[int, int]]:
    """(address, port) -> (socket inode, owner uid) for this network namespace's TCP sockets
    whose local end is one of ``wanted`` (listening sockets left out).

    One local (address, port) may serve several connections to different servers: then the one
    whose remote port is ``server_port`` wins, and without one the pair stays unmatched. A lone
    candidate is taken whatever its remote port (NAT and proxies change it). The kernel writes
    the tables in pieces and may skip rows while sockets come and go, so pairs not found are
    looked up once more.
    """
    keys = set(wanted)
    candidates = _candidates(keys, proc)
    missing = keys - candidates.keys()
    if missing:
        candidates.update(_candidates(missing, proc))
    found: dict[tuple[str, int], tuple[int, int]] = {}
    for key, rows in candidates.items():
        to_server = [r for r in rows if r[0] == server_port]
        if len(rows) == 1 or len(to_server) == 1:
            _, inode, uid = rows[0] if len(rows) == 1 else to_server[0]
            found[key] = (inode, uid)
    return found


def _candidates(keys: set[tuple[str, int]], proc: Path
                ) -> dict[tuple[str, int], list[tuple[int, int, int]]]:
    """(address, port) -> [(remote port, inode, uid)] of the sockets with that local end: from
    sock_diag (cheaper for the kernel), or from /proc where netlink is not allowed (or ``proc``
    is not the real one)."""
    if proc == PROC:
        try:
            return tcp_local_ends(keys)
        except OSError:
            pass
    return proc_local_ends(keys, proc)


def proc_local_ends(keys: set[tuple[str, int]], proc: Path = PROC
                    ) -> dict[tuple[str, int], list[tuple[int, int, int]]]:
    """``_candidates`` from ``/proc/net/tcp{,6}``. Matches the kernel's hex text instead of
    decoding every row: with the server on the same host, 1,000 connections are 2,000 rows."""
    by_hex = {form: key for key in keys for form in kernel_hex(*key)}
    candidates: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for name in ("tcp", "tcp6"):
        try:
            table = open(proc / "net" / name, encoding="ascii")  # noqa: SIM115 (closed below)
        except OSError:  # a family this namespace lacks
            continue
        with table:  # line by line: the whole table can be megabytes
            next(table, None)
            for line in table:
                f = line.split(maxsplit=10)
                key = by_hex.get(f[1]) if len(f) > 9 else None
                if key is not None and f[3] != _LISTEN and f[9] != "0":
                    candidates.setdefault(key, []).append(
                        (int(f[2][-4:], 16), int(f[9]), int(f[7])))
    return candidates


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


def _fd_links(fd_dir: str) -> Iterator[str]:
    """The targets of a process's open files; PermissionError if the agent may not read them."""
    for name in os.listdir(fd_dir):
        try:
            yield os.readlink(f"{fd_dir}/{name}")
        except PermissionError:  # listing allowed (CAP_DAC_READ_SEARCH), links not
            raise
        except OSError:  # closed meanwhile
            continue


def socket_owners(inodes: dict[int, int], proc: Path = PROC) -> tuple[dict[int, int], int]:
    """inode -> pid for the wanted socket inodes (inode -> owner uid), and how many processes
    the agent may not read.

    Processes of the sockets' owner uids are read first (``/proc/<pid>``'s owner is one stat),
    the rest only if a socket is still missing; the scan stops once every inode is found. With
    the server on the same host this skips its backends.
    """
    uids = set(inodes.values())
    owners: dict[int, int] = {}
    unreadable = 0
    later: list[os.DirEntry[str]] = []
    for first_pass in (True, False):
        entries = (e for e in os.scandir(proc) if e.name.isdigit()) if first_pass else later
        for entry in entries:
            if len(owners) == len(inodes):
                return owners, unreadable
            if first_pass:
                try:
                    uid = entry.stat().st_uid
                except OSError:  # exited
                    continue
                if uid not in uids:
                    later.append(entry)
                    continue
            try:
                links = list(_fd_links(f"{entry.path}/fd"))
            except PermissionError:
                unreadable += 1
                continue
            except OSError:  # exited, or not a process directory
                continue
            for link in links:
                if link.startswith("socket:["):
                    inode = int(link[8:-1])
                    if inode in inodes:
                        owners[inode] = int(entry.name)
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


def on_this_host(host: str, networks: Iterable[str]) -> bool:
    """Whether the agent's own connection reaches a server on this host (a Unix socket or one
    of this host's addresses): only then can a Unix-socket client be one of its processes."""
    if not host or host.startswith("/"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in networks
               if ipaddress.ip_network(net).version == ip.version)


def connection_key(client_addr: str, client_port: int, pid: int) -> tuple[str, int]:
    """How ``HostProcesses.owners`` names a connection: (address, port) over TCP, and
    (``local``, backend pid) over a Unix socket."""
    if client_addr == LOCAL_CLIENT:
        return (LOCAL_CLIENT, pid)
    return (normalise(client_addr), client_port)


def unix_client_sockets(backends: Iterable[int], server_port: int | None, proc: Path = PROC
                        ) -> dict[tuple[str, int], int]:
    """(``local``, backend pid) -> the client's socket inode, for backends of this host's
    server: the backend's socket bound to ``.s.PGSQL.<server_port>`` and its peer."""
    wanted = set(backends)
    if not wanted:
        return {}
    try:
        table = connected_stream_sockets()
    except OSError:  # no netlink here (sandboxed): Unix-socket clients stay unresolved
        return {}
    suffix = f".s.PGSQL.{server_port}"
    out = {}
    for pid in wanted:
        try:
            links = list(_fd_links(f"{proc}/{pid}/fd"))
        except OSError:  # not a process of this host, or unreadable
            continue
        for link in links:
            found = table.get(int(link[8:-1])) if link.startswith("socket:[") else None
            if found is not None and found.name.endswith(suffix):
                out[(LOCAL_CLIENT, pid)] = found.peer
                break
    return out


def read_host(clients: Iterable[tuple[str, int, int]], server_port: int | None = None,
              proc: Path = PROC) -> HostProcesses:
    """Owners of the given connections (client address, client port, backend pid), with their
    processes; ``server_port`` (the server's ``port``) tells apart TCP connections sharing a
    local port and names the server's Unix socket."""
    listed = list(clients)
    if not listed:
        return HostProcesses()
    try:
        return _read_host(listed, server_port, proc)
    except (OSError, ValueError, IndexError) as exc:  # attribution, never the poll, fails
        if type(exc).__name__ not in _FAILURES_LOGGED:
            _FAILURES_LOGGED.add(type(exc).__name__)
            log.warning("client process attribution failed; connections stay unresolved",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
        return HostProcesses()


def _read_host(clients: list[tuple[str, int, int]], server_port: int | None, proc: Path
               ) -> HostProcesses:
    tcp = {connection_key(*c) for c in clients if c[0] != LOCAL_CLIENT}
    sockets = socket_inodes(tcp, server_port, proc) if tcp else {}
    unix = unix_client_sockets((pid for addr, _, pid in clients if addr == LOCAL_CLIENT),
                               server_port, proc)
    # A Unix socket's owner uid is not in the dump: -1 sends its search to the second pass.
    inodes = {**dict(sockets.values()), **dict.fromkeys(unix.values(), -1)}
    pids, unreadable = socket_owners(inodes, proc)
    owners = {key: pids[inode] for key, (inode, _) in sockets.items() if inode in pids}
    owners.update({key: pids[inode] for key, inode in unix.items() if inode in pids})
    processes = {}
    for pid in set(owners.values()):
        described = describe(pid, proc)
        if described is not None:
            processes[pid] = described
    return HostProcesses(owners, processes, unreadable)
