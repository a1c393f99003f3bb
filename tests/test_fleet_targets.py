"""Targets from a directory of files, and sharding across agents, on a real server.

One agent reads ``targets_dir``: a bad file is rejected alone with one line naming file and key,
a file added or removed is picked up without a signal. Three agents with ``--shard I/3`` over the
same targets poll every target exactly once; going to four shards moves only what the new shard
wins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_e2e import Agent, wait_until

from agent import config as cfg
from agent.demo.server import LocalServer
from agent.errors import ConfigError
from agent.servers import server_key
from agent.shard import mine, shard_of

UP = "pgconn_agent_up"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        srv.execute(*(f"CREATE DATABASE db{i}" for i in range(3)))
        yield srv


def target_file(path: Path, *targets: tuple[str, str]) -> None:
    path.write_text("".join(f"[[targets]]\nname = '{n}'\ndsn = '{d}'\n" for n, d in targets))


def up_targets(agent: Agent) -> set[str]:
    return {lab["target"] for n, lab, v in agent.samples() if n == UP and v == 1}


def test_files_are_read_alone_and_followed_without_a_signal(server: LocalServer,
                                                            tmp_path: Path) -> None:
    targets = tmp_path / "targets.d"
    targets.mkdir()
    target_file(targets / "a.toml", ("a0", server.dsn(dbname="db0")))
    (targets / "b.toml").write_text(f"[[targets]]\nname = 'b'\ndsn = '{server.dsn()}'\n"
                                    "intervall = 3\n")
    (targets / "notes.txt").write_text("not a target file")
    config = tmp_path / "agent.toml"
    config.write_text("[agent]\ninterval = 0.5\ntargets_dir = 'targets.d'\n")
    with Agent(["--config", str(config), "--listen", "127.0.0.1:0"]) as agent:
        agent.started()
        wait_until(lambda: up_targets(agent) == {"a0"}, 15, "a0 up, b rejected")
        rejected = [r for r in agent.logs() if r.get("msg") == "target file rejected"]
        assert len(rejected) == 1
        assert str(targets / "b.toml") in rejected[0]["error"]
        assert "targets[0].intervall: unknown key" in rejected[0]["error"]

        target_file(targets / "c.toml", ("c1", server.dsn(dbname="db1")),
                    ("c2", server.dsn(dbname="db2")))
        wait_until(lambda: up_targets(agent) == {"a0", "c1", "c2"}, 15, "c.toml's targets")
        (targets / "a.toml").unlink()
        wait_until(lambda: up_targets(agent) == {"c1", "c2"}, 15, "a0 gone with its file")
        assert agent.value(UP, target="a0") is None
        # A clash with a name another file holds rejects the later file only.
        target_file(targets / "d.toml", ("c1", server.dsn()))
        wait_until(lambda: any("duplicate target name 'c1'" in str(r.get("error"))
                               for r in agent.logs()), 15, "the clash rejected")
        assert up_targets(agent) == {"c1", "c2"}
        code, _ = agent.stop()
    assert code == 0


def fleet(servers: int, per_server: int) -> tuple[cfg.Target, ...]:
    return tuple(cfg.Target(f"s{s}-db{d}", f"host=pg{s}.example port=5432 dbname=db{d}")
                 for s in range(servers) for d in range(per_server))


def test_rendezvous_keeps_servers_together_and_moves_only_what_it_must() -> None:
    targets = fleet(60, 5)
    three = [mine(targets, (i, 3)) for i in range(3)]
    assert sorted(t.name for part in three for t in part) == sorted(t.name for t in targets)
    assert all(len(part) > 0 for part in three)
    for part in three:
        servers = {server_key(t) for t in part}
        assert all(shard_of(key, 3) == three.index(part) for key in servers)
        assert len(part) == 5 * len(servers)  # every database of a server in one shard
    before = {server_key(t): shard_of(server_key(t), 3) for t in targets}
    after = {key: shard_of(key, 4) for key in before}
    moved = {key for key in before if before[key] != after[key]}
    assert moved and all(after[key] == 3 for key in moved)  # only to the new shard
    assert len(moved) < len(before) / 2


def test_three_agents_poll_every_target_exactly_once(server: LocalServer,
                                                     tmp_path: Path) -> None:
    targets = tmp_path / "targets.d"
    targets.mkdir()
    names = [f"t{i}" for i in range(9)]
    # Distinct ``server`` names: nine servers as far as sharding knows, all on one real cluster.
    (targets / "fleet.toml").write_text("".join(
        f"[[targets]]\nname = '{n}'\nserver = 'pg-{n}'\ndsn = '{server.dsn(dbname='db0')}'\n"
        for n in names))
    with contextlib.ExitStack() as stack:
        agents = [stack.enter_context(Agent(["--targets-dir", str(targets), "--interval", "0.5",
                                             "--listen", "127.0.0.1:0", "--shard", shard]))
                  for shard in ("0/3", "pgconn-agent-1/3", "2/3")]
        for agent in agents:
            agent.started()
        expected = [{t.name for t in mine(cfg.parse_target_file(targets / "fleet.toml", 1),
                                          (i, 3))} for i in range(3)]
        for agent, shard_targets in zip(agents, expected, strict=True):
            def shard_up(a: Agent = agent, e: set[str] = shard_targets) -> bool:
                return up_targets(a) == e

            wait_until(shard_up, 15, "the shard's targets up")
        polled = [up_targets(agent) for agent in agents]
        for agent in agents:
            # Series of other shards' targets never appear, not even pgconn_agent_up 0.
            assert {lab["target"] for _, lab, _ in agent.samples() if "target" in lab} \
                == up_targets(agent)
    assert sorted(n for part in polled for n in part) == names


@pytest.mark.parametrize("text", ["3/3", "1/0", "x/3", "1/3/4", "pod-a/3"])
def test_a_bad_shard_is_rejected_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^<command line>: agent\.shard: expected I/N"):
        cfg.load(None, {"shard": text})


def test_a_pod_name_gives_the_shard_index() -> None:
    assert cfg.load(None, {"shard": "pgconn-agent-12/16"}).shard == (12, 16)
