"""The peer of each connected Unix stream socket, from the kernel's sock_diag netlink interface.

``/proc/net/unix`` lists Unix sockets without their peers; ``NETLINK_SOCK_DIAG`` with
``UDIAG_SHOW_PEER`` gives them (Linux 3.3+). A PostgreSQL backend's client socket is the one
bound to the server's ``.s.PGSQL.<port>``; its peer's inode is the client's socket.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER = 0x01, 0x04
UNIX_DIAG_NAME, UNIX_DIAG_PEER = 0, 2
TCP_ESTABLISHED = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_REQUEST = struct.Struct("=BBHIII8x")  # unix_diag_req, the cookie left zero
_MESSAGE = struct.Struct("=BBBBI8x")  # unix_diag_msg
_ATTR = struct.Struct("=HH")  # rtattr


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


def connected_stream_sockets() -> dict[int, UnixSocket]:
    """inode -> socket for every connected Unix stream socket of this network namespace.

    Raises OSError where netlink is unavailable (a sandbox without AF_NETLINK).
    """
    request = _REQUEST.pack(socket.AF_UNIX, 0, 0, 1 << TCP_ESTABLISHED, 0,
                            UDIAG_SHOW_NAME | UDIAG_SHOW_PEER)
    out: dict[int, UnixSocket] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.sendall(_HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY,
                                NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request)
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR or length < _HEADER.size:
                    raise OSError("sock_diag refused the Unix socket dump")
                body = offset + _HEADER.size
                _, _, _, _, inode = _MESSAGE.unpack_from(data, body)
                attrs = _attributes(data, body + _MESSAGE.size, offset + length)
                if UNIX_DIAG_PEER in attrs:
                    name = attrs.get(UNIX_DIAG_NAME, b"").split(b"\0", 1)[0]
                    out[inode] = UnixSocket(inode, name.decode("utf-8", "replace"),
                                            struct.unpack("=I", attrs[UNIX_DIAG_PEER][:4])[0])
                offset += (length + 3) & ~3
            if not data:
                return out
