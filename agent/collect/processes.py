"""Which local process owns a client socket, read from Linux ``/proc`` (and sock_diag).

PostgreSQL knows each connection's ``(client_addr, client_port)``; the kernel of the client's
host knows which process owns that socket. When the agent runs on that host (or in its network
namespace), the kernel's TCP table (sock_diag, or ``/proc/net/tcp{,6}``) maps the address pair
to a socket inode and ``/proc/<pid>/fd`` maps the inode to a process; a Unix-socket client is
the peer of its backend's socket. Reading other users' ``fd`` folders needs root or
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
from .process_info import PROC, ClientProcess, describe
from .sock_diag import connected_stream_sockets, tcp_local_ends

log = logging.getLogger(__name__)
_FAILURES_LOGGED: set[str] = set()
"""Kinds of failure already logged: one line each, not one per poll."""
_LISTEN = "0A"


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
