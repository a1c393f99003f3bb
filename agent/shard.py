"""Sharding targets across agents by rendezvous hashing of their server.

Two agents must never poll the same target (every series would double). Each agent of N polls
the servers whose highest-scoring shard is its own: every server lands on exactly one shard, a
server's databases stay together (they share one poll), and going from N to N+1 shards moves
only the servers the new shard wins (about 1/(N+1) of them).
"""

from __future__ import annotations

import hashlib

from .config import Target
from .servers import server_key


def _score(shard: int, key: str) -> int:
    digest = hashlib.blake2b(f"{shard}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) that polls the server ``key``."""
    return max(range(count), key=lambda shard: _score(shard, key))


def mine(targets: tuple[Target, ...], shard: tuple[int, int] | None) -> tuple[Target, ...]:
    """The targets this agent polls: all of them unless ``shard`` = (index, count) is set."""
    if shard is None:
        return targets
    index, count = shard
    return tuple(t for t in targets if shard_of(server_key(t), count) == index)
