"""Join this host's client connections to the processes holding them, and their points (pure).

Per holder (application_name, client_addr): which local processes hold its connections and how
many each. A connection whose socket the agent could not find (closed since the poll, another
network namespace, or a process whose ``fd`` the agent may not read) is ``unresolved``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from .. import contract as c
from ..collect.process_info import ClientProcess
from ..collect.processes import HostProcesses, connection_key
from ..collect.snapshot import ClientPort
from .cap import Key, cap


@dataclass(frozen=True, slots=True)
class ProcessShare:
    """The connections of one holder that one local process holds."""

    process: ClientProcess
    count: int
    states: tuple[tuple[str, int], ...]
    """(state, connections), most first."""


@dataclass(frozen=True, slots=True)
class HolderProcesses:
    application_name: str
    client_addr: str
    shares: tuple[ProcessShare, ...]
    """Largest first."""
    unresolved: int

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shares) + self.unresolved


@dataclass(frozen=True, slots=True)
class ProcessAttribution:
    holders: tuple[HolderProcesses, ...]
    """Largest first."""
    unreadable: int
    """Processes whose open sockets the agent may not read."""

    @property
    def unresolved(self) -> int:
        return sum(h.unresolved for h in self.holders)


def _ordered(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def join(ports: tuple[ClientPort, ...], host: HostProcesses | None) -> ProcessAttribution | None:
    """Each connection to the process owning its socket, grouped by holder; None when off."""
    if host is None:
        return None
    states: dict[tuple[str, str], dict[int, Counter[str]]] = defaultdict(dict)
    unresolved: Counter[tuple[str, str]] = Counter()
    for port in ports:
        holder = (port.application_name, port.client_addr)
        pid = host.owners.get(connection_key(port.client_addr, port.client_port, port.pid))
        if pid is None or pid not in host.processes:
            unresolved[holder] += 1
        else:
            states[holder].setdefault(pid, Counter())[port.state] += 1
    holders = []
    for holder in set(states) | set(unresolved):
        shares = sorted((ProcessShare(host.processes[pid], sum(n.values()), _ordered(n))
                         for pid, n in states.get(holder, {}).items()),
                        key=lambda s: (-s.count, s.process.pid))
        holders.append(HolderProcesses(holder[0], holder[1], tuple(shares), unresolved[holder]))
    holders.sort(key=lambda h: (-h.total, h.application_name, h.client_addr))
    return ProcessAttribution(tuple(holders), host.unreadable)


Point = tuple[tuple[tuple[str, str], ...], float]


def process_points(target: str, attribution: ProcessAttribution | None, max_groups: int
                   ) -> dict[str, list[Point]]:
    """Connections per local client process (pid, command), capped; unresolved connections."""
    if attribution is None:
        return {}
    per_process: dict[Key, int] = defaultdict(int)
    for holder in attribution.holders:
        for share in holder.shares:
            per_process[(str(share.process.pid), share.process.comm)] += share.count
    capped, _ = cap(dict(per_process), max_groups, float, int.__add__)
    return {
        c.CLIENT_PROCESS_CONNECTIONS.name: [
            ((("target", target), ("pid", pid), ("command", command)), float(n))
            for (pid, command), n in sorted(capped.items())],
        c.CLIENT_PROCESS_UNRESOLVED.name: [((("target", target),),
                                            float(attribution.unresolved))],
    }
