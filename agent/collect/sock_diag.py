"""Socket tables from the kernel's sock_diag netlink interface (Linux 3.3+).

``/proc/net/unix`` lists Unix sockets without their peers; ``UDIAG_SHOW_PEER`` gives them (a
PostgreSQL backend's client socket is the one bound to ``.s.PGSQL.<port>``; its peer is the
client's socket). For TCP the same dump costs the kernel a fraction of writing
``/proc/net/tcp`` as text. Every call raises OSError where netlink is not allowed.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER = 0x01, 0x04
UNIX_DIAG_NAME, UNIX_DIAG_PEER = 0, 2
TCP_ESTABLISHED = 1
TCP_TIME_WAIT, TCP_LISTEN = 6, 10
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_REQUEST = struct.Struct("=BBHIII8x")  # unix_diag_req, the cookie left zero
_MESSAGE = struct.Struct("=BBBBI8x")  # unix_diag_msg
_ATTR = struct.Struct("=HH")  # rtattr
_INET_REQUEST = struct.Struct("=BBBBI48x")  # inet_diag_req_v2, any socket id
_PORT = struct.Struct(">H")
_UID_INODE = struct.Struct("=II")
_INET_SRC, _INET_UID = 8, 64  # offsets in inet_diag_msg


@dataclass(frozen=True, slots=True)
class UnixSocket:
    inode: int
    name: str
    """The bound path (an accepted socket carries its listener's), "" if unnamed."""
    peer: int


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out = {}
    while offset + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        out[kind] = data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return out


def _dump(request: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(data, message offset, message end) of every answer to one sock_diag dump request."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.sendall(_HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY,
                                NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request)
        while True:
            data = nl.recv(1 << 16)
            if not data:
                return
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR or length < _HEADER.size:
                    raise OSError("sock_diag refused the dump")
                yield data, offset + _HEADER.size, offset + length
                offset += (length + 3) & ~3


def connected_stream_sockets() -> dict[int, UnixSocket]:
    """inode -> socket for every connected Unix stream socket of this network namespace."""
    request = _REQUEST.pack(socket.AF_UNIX, 0, 0, 1 << TCP_ESTABLISHED, 0,
                            UDIAG_SHOW_NAME | UDIAG_SHOW_PEER)
    out: dict[int, UnixSocket] = {}
    for data, body, end in _dump(request):
        _, _, _, _, inode = _MESSAGE.unpack_from(data, body)
        attrs = _attributes(data, body + _MESSAGE.size, end)
        if UNIX_DIAG_PEER in attrs:
            name = attrs.get(UNIX_DIAG_NAME, b"").split(b"\0", 1)[0]
            out[inode] = UnixSocket(inode, name.decode("utf-8", "replace"),
                                    struct.unpack("=I", attrs[UNIX_DIAG_PEER][:4])[0])
    return out


def tcp_local_ends(keys: Iterable[tuple[str, int]]
                   ) -> dict[tuple[str, int], list[tuple[int, int, int]]]:
    """(address, port) -> [(remote port, inode, owner uid)] of the TCP sockets (both families,
    IPv4-mapped included, listening and TIME_WAIT left out) whose local end is in ``keys``."""
    wanted: dict[tuple[bytes, int], tuple[str, int]] = {}
    for address, port in keys:
        ip = ipaddress.ip_address(address)
        wanted[(ip.packed, port)] = (address, port)
        if isinstance(ip, ipaddress.IPv4Address):
            wanted[(ipaddress.IPv6Address(f"::ffff:{ip}").packed, port)] = (address, port)
    ports = {port for _, port in wanted}
    states = 0xFFF & ~(1 << TCP_LISTEN | 1 << TCP_TIME_WAIT)
    out: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for family, size in ((socket.AF_INET, 4), (socket.AF_INET6, 16)):
        for data, body, _ in _dump(_INET_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, states)):
            port = _PORT.unpack_from(data, body + 4)[0]
            if port not in ports:
                continue
            src = data[body + _INET_SRC:body + _INET_SRC + size]
            key = wanted.get((src, port))
            uid, inode = _UID_INODE.unpack_from(data, body + _INET_UID)
            if key is not None and inode:
                out.setdefault(key, []).append((_PORT.unpack_from(data, body + 6)[0], inode, uid))
    return out
