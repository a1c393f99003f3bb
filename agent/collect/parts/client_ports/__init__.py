"""Client backends connected from this host's own addresses, one row each, and the local
processes owning their sockets (read from /proc after the poll)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ... import processes
from ...part import Part

CLIENT_PORT_LIMIT = 5000


@dataclass(frozen=True, slots=True)
class ClientPort:
    """A client backend connected from one of this host's addresses (see processes.py)."""

    pid: int
    client_addr: str
    client_port: int
    application_name: str
    state: str
    server_port: int


def host(ports: tuple[ClientPort, ...]) -> processes.HostProcesses:
    """The local processes owning these ports' sockets."""
    return processes.read_host(((p.client_addr, p.client_port, p.pid) for p in ports),
                               ports[0].server_port if ports else None)


def _params(server_version_num: int) -> Mapping[str, Any]:
    return {"client_port_limit": CLIENT_PORT_LIMIT}


PART = Part("client_ports", ClientPort, params=_params)
