"""Which local process holds the connections: /proc parsers on this machine's real /proc, the pure
join and diagnosis, and the agent naming real node-postgres and psycopg client processes.

Real parts: this machine's /proc, a throwaway PostgreSQL, npm ``pg`` in Node processes, psycopg
in a Python process, ``pgconn-agent run`` and ``diagnose`` as processes. The real-client tests
take about 10 s (eleven Node processes connect 100 times).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_e2e import AGENT, Agent, clean_env, wait_until
from client_processes import CLIENTS, Clients, node_app

from agent import config as cfg
from agent import contract as c
from agent.aggregate.processes import HolderProcesses, ProcessShare, join, process_points
from agent.collect import process_info as info
from agent.collect import processes as proc
from agent.collect.snapshot import ClientPort
from agent.collect.sock_diag import connected_stream_sockets, tcp_local_ends
from agent.demo.server import LocalServer, free_port
from agent.diagnose.processes import holder_finding
from agent.errors import ConfigError

# -- /proc parsers on this machine's /proc ------------------------------------------------------


@pytest.fixture
def connected_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A client socket connected to a listener of this process, over IPv4 loopback."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            yield client, accepted
        finally:
            client.close()
            accepted.close()


def _inode(sock: socket.socket) -> int:
    link = os.readlink(f"/proc/self/fd/{sock.fileno()}")
    assert link.startswith("socket:[")
    return int(link[8:-1])


def test_a_known_socket_is_found_with_its_inode_and_owner(
        connected_pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = connected_pair
    addr, port = client.getsockname()
    inode = _inode(client)
    assert proc.socket_inodes([(addr, port)]) == {(addr, port): (inode, os.geteuid())}
    # At the listener's port: the accepted connection, not the listening socket.
    server_port = accepted.getsockname()[1]
    assert proc.socket_inodes([(addr, server_port)]) == {
        (addr, server_port): (_inode(accepted), os.geteuid())}
    assert proc.socket_owners({inode: os.geteuid()})[0] == {inode: os.getpid()}
    found = proc.read_host([(addr, port, 0)])
    assert found.owners == {(addr, port): os.getpid()}
    me = found.processes[os.getpid()]
    assert me.comm == Path("/proc/self/comm").read_text().strip()
    assert me.exe == os.readlink("/proc/self/exe")
    assert me.driver is not None and me.driver.name == "psycopg 3"  # psycopg is loaded here


def test_an_ipv6_socket_is_read_from_tcp6() -> None:
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as server, \
            socket.create_connection(server.getsockname()[:2]) as client:
        port = client.getsockname()[1]
        assert proc.socket_inodes([("::1", port)]) == {("::1", port): (_inode(client),
                                                                       os.geteuid())}


def test_sock_diag_and_proc_net_tcp_list_the_same_local_ends(
        connected_pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = connected_pair
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as dual, \
            socket.create_connection(("127.0.0.1", dual.getsockname()[1])) as v4_client:
        mapped, _ = dual.accept()  # an IPv4 connection on an IPv6 socket: ::ffff:127.0.0.1
        with mapped:
            keys = {("127.0.0.1", client.getsockname()[1]),
                    ("127.0.0.1", accepted.getsockname()[1]),
                    ("127.0.0.1", dual.getsockname()[1]), ("127.0.0.1", 1)}
            by_netlink = tcp_local_ends(keys)
            assert by_netlink == proc.proc_local_ends(keys)
            assert by_netlink[("127.0.0.1", dual.getsockname()[1])] == [
                (v4_client.getsockname()[1], _inode(mapped), os.geteuid())]
            assert ("127.0.0.1", 1) not in by_netlink


def test_the_kernels_hex_form_and_ipv4_on_a_dual_stack_socket(tmp_path: Path) -> None:
    assert proc.kernel_hex("127.0.0.1", 5432) == (
        "0100007F:1538", "0000000000000000FFFF00000100007F:1538")
    assert proc.normalise("::ffff:10.0.3.7") == "10.0.3.7"
    assert proc.normalise("0:0:0:0:0:0:0:1") == "::1"
    (tmp_path / "net").mkdir()
    header = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
              "timeout inode\n")
    row = ("   0: {local} 0000000000000000FFFF00000100007F:1538 {st} 00000000:00000000 "
           "00:00000000 00000000  1000        0 {inode} 1 0000000000000000 20 4 0 10 -1\n")
    mapped = "0000000000000000FFFF00000100007F"
    (tmp_path / "net" / "tcp6").write_text(
        header + row.format(local=f"{mapped}:D431", st="01", inode=4242)
        + row.format(local=f"{mapped}:D432", st="0A", inode=4243)
        + row.format(local=f"{mapped}:D433", st="06", inode=0))
    assert proc.socket_inodes([("127.0.0.1", 0xD431), ("127.0.0.1", 0xD432),
                               ("127.0.0.1", 0xD433)], proc=tmp_path) == {
        ("127.0.0.1", 0xD431): (4242, 1000)}  # listening and inode-less rows left out


def test_a_local_port_shared_by_connections_to_two_servers_goes_to_the_servers_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as ours, \
            socket.create_server(("127.0.0.1", 0)) as other:
        pair = [socket.socket(), socket.socket()]
        try:
            for sock in pair:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            pair[0].bind(("127.0.0.1", 0))
            port = pair[0].getsockname()[1]
            pair[1].bind(("127.0.0.1", port))
            pair[0].connect(other.getsockname())
            pair[1].connect(ours.getsockname())
            server_port = ours.getsockname()[1]
            assert proc.socket_inodes([("127.0.0.1", port)], server_port) == {
                ("127.0.0.1", port): (_inode(pair[1]), os.geteuid())}
            assert proc.socket_inodes([("127.0.0.1", port)], None) == {}  # ambiguous
        finally:
            for sock in pair:
                sock.close()


def test_unix_socket_clients_are_attributed_only_for_a_server_on_this_host() -> None:
    nets = proc.local_networks()
    assert proc.on_this_host("/var/run/postgresql", nets)
    assert proc.on_this_host("127.0.0.1", nets) and proc.on_this_host("::1", nets)
    assert not proc.on_this_host("203.0.113.9", nets)
    assert not proc.on_this_host("db.example.com", nets)
    assert proc.connection_key("local", -1, 4711) == ("local", 4711)
    assert proc.connection_key("::ffff:10.0.3.7", 40001, 4711) == ("10.0.3.7", 40001)


def test_the_peer_of_a_unix_socket_comes_from_sock_diag(tmp_path: Path) -> None:
    path = str(tmp_path / ".s.PGSQL.5432")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            accepted, _ = server.accept()
            with accepted:
                table = connected_stream_sockets()
                backend_side = table[_inode(accepted)]
                assert (backend_side.name, backend_side.peer) == (path, _inode(client))
                assert table[_inode(client)].peer == _inode(accepted)
                assert proc.unix_client_sockets([os.getpid()], 5432, tmp_path.parent) == {}
                # Our own process plays the backend: its socket bound to .s.PGSQL.5432.
                assert proc.unix_client_sockets([os.getpid()], 5432) == {
                    ("local", os.getpid()): _inode(client)}
                assert proc.unix_client_sockets([os.getpid()], 5433) == {}


def test_a_driver_shows_by_an_open_jar_or_only_by_its_command_line(tmp_path: Path) -> None:
    jar = tmp_path / "HikariCP-5.1.0.jar"
    jar.write_bytes(b"PK")
    holds = tmp_path / "hold.py"  # a plain python3: no PostgreSQL library is loaded
    holds.write_text("import sys\nf = open(sys.argv[1], 'rb')\nprint('ready', flush=True)\n"
                     "sys.stdin.read()\n", encoding="utf-8")
    with Clients() as clients:
        opened = clients.start(["/usr/bin/python3", str(holds), str(jar)])
        named = clients.start(["/usr/bin/python3", str(holds), "/dev/null",
                               "--classpath=lib/HikariCP-5.1.0.jar", "--password=hunter2"])
        clients.wait_ready()
        seen = {pid: info.describe(pid) for pid in (opened, named)}
    drivers = {pid: (d.driver.name, d.driver.evidence, d.driver.pool_default)
               for pid, d in seen.items() if d is not None and d.driver is not None}
    assert drivers == {opened: ("HikariCP", "loaded", 10), named: ("HikariCP", "cmdline", 10)}
    shown = seen[named]
    assert shown is not None and shown.cmdline.endswith(
        "/dev/null --classpath=lib/HikariCP-5.1.0.jar --password=***")


def test_a_node_app_with_prismas_pg_adapter_is_told_from_plain_node_postgres(
        tmp_path: Path) -> None:
    plain = node_app(tmp_path / "plain")
    prisma = tmp_path / "prisma"
    adapter = prisma / "node_modules" / "@prisma" / "adapter-pg"
    adapter.mkdir(parents=True)
    (adapter / "package.json").write_text('{"name": "@prisma/adapter-pg"}', encoding="utf-8")
    (prisma / "node_modules" / "pg").symlink_to(
        (tmp_path / "plain" / "node_modules" / "pg").resolve(), target_is_directory=True)
    shutil.copy(CLIENTS / "pools.js", prisma / "pools.js")
    with Clients() as clients:  # no pools: the processes only load pg and wait
        pids = {clients.node_pools(script, 0, 0, port=1, app="idle"): name
                for script, name in ((plain, "plain"), (prisma / "pools.js", "prisma"))}
        clients.wait_ready()
        seen = {name: info.describe(pid) for pid, name in pids.items()}
    assert {name: (d.driver.name, d.driver.evidence, d.driver.pool_default)
            for name, d in seen.items() if d is not None and d.driver is not None} == {
        "plain": ("node-postgres", "installed", 10),
        "prisma": ("Prisma (adapter-pg)", "installed", 10)}


def test_local_networks_hold_loopback_and_this_hosts_addresses() -> None:
    nets = proc.local_networks()
    assert "127.0.0.0/8" in nets and "::1/128" in nets
    hostname_addr = socket.gethostbyname(socket.gethostname())
    import ipaddress
    assert any(ipaddress.ip_address(hostname_addr) in ipaddress.ip_network(n) for n in nets)


def test_a_missing_or_garbled_proc_attributes_nothing_and_raises_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proc, "_FAILURES_LOGGED", set())
    assert proc.local_networks(tmp_path) == ()
    assert proc.read_host([("127.0.0.1", 5555, 0)], proc=tmp_path) == proc.HostProcesses()
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(
        "header\n   0: 0100007F:15B3 0100007F:1538 01 0:0 0:0 0 not-a-uid 0 4242\n")
    for _ in range(2):
        assert proc.read_host([("127.0.0.1", 5555, 0)], proc=tmp_path) == proc.HostProcesses()
    assert [r.getMessage() for r in caplog.records] == [
        "client process attribution failed; connections stay unresolved"]


@pytest.mark.parametrize(("argv", "shown"), [
    (["psql", "postgresql://app:hunter2@db/shop"], "psql postgresql://app:***@db/shop"),
    (["app", "--password", "hunter2", "--port", "5432"], "app --password *** --port 5432"),
    (["app", "--db-password=hunter2"], "app --db-password=***"),
    (["app", "host=db password=hunter2 user=x"], "app host=db password=*** user=x"),
    (["app", "API_TOKEN=abc123", "--api-key", "k"], "app API_TOKEN=*** --api-key ***"),
    (["node", "server.js", "--port", "3000"], "node server.js --port 3000"),
])
def test_secrets_in_command_lines_are_redacted(argv: list[str], shown: str) -> None:
    assert info.shown_cmdline("\0".join(argv).encode() + b"\0") == shown


def test_long_command_lines_are_truncated() -> None:
    shown = info.shown_cmdline(b"node\0" + b"x" * 500 + b"\0", limit=40)
    assert len(shown) == 40 and shown.startswith("node xxx") and shown.endswith("…")


# -- the pure join and the diagnosis -------------------------------------------------------------

NODE = info.Driver("node-postgres", 10, "a node-postgres pool (pg.Pool) holds at most 10 by "
                   "default (max)", "installed")


def _process(pid: int, driver: info.Driver | None = NODE) -> info.ClientProcess:
    return info.ClientProcess(pid, "node", "/usr/bin/node", f"node app-{pid}.js", driver)


def test_join_groups_connections_by_holder_and_process() -> None:
    ports = (ClientPort(11, "127.0.0.1", 40001, "shop", "idle", 5432),
             ClientPort(12, "127.0.0.1", 40002, "shop", "active", 5432),
             ClientPort(13, "::ffff:127.0.0.1", 40003, "shop", "idle", 5432),
             ClientPort(14, "10.0.3.7", 40004, "billing", "idle", 5432),
             ClientPort(15, "10.0.3.7", 40005, "billing", "idle", 5432))
    host = proc.HostProcesses(
        owners={("127.0.0.1", 40001): 501, ("127.0.0.1", 40002): 501,
                ("127.0.0.1", 40003): 502, ("10.0.3.7", 40004): 503},
        processes={501: _process(501), 502: _process(502), 503: _process(503, None)},
        unreadable=2)
    a = join(ports, host)
    assert a is not None and a.unreadable == 2 and a.unresolved == 1
    # Largest first; a holder keeps its address as the server reports it.
    billing, shop, mapped = a.holders
    assert (shop.application_name, shop.client_addr, shop.total) == ("shop", "127.0.0.1", 2)
    assert [(s.process.pid, s.count, s.states) for s in shop.shares] == [
        (501, 2, (("active", 1), ("idle", 1)))]
    assert (billing.total, billing.unresolved, [s.process.pid for s in billing.shares]) == (
        2, 1, [503])
    assert (mapped.client_addr, [s.process.pid for s in mapped.shares]) == (
        "::ffff:127.0.0.1", [502])
    assert join(ports, None) is None
    pts = process_points("t", a, max_groups=2)
    assert pts[c.CLIENT_PROCESS_CONNECTIONS.name] == [
        ((("target", "t"), ("pid", c.OVERFLOW_VALUE), ("command", c.OVERFLOW_VALUE)), 2.0),
        ((("target", "t"), ("pid", "501"), ("command", "node")), 2.0)]
    assert pts[c.CLIENT_PROCESS_UNRESOLVED.name] == [((("target", "t"),), 1.0)]


def _holder(*counts: int, driver: info.Driver | None = NODE) -> HolderProcesses:
    return HolderProcesses("shop", "127.0.0.1", tuple(
        ProcessShare(_process(100 + i, driver), n, (("idle", n),))
        for i, n in enumerate(counts)), 0)


def test_one_process_with_many_connections_means_several_pools() -> None:
    f = holder_finding(_holder(96))
    assert f.code == "process_many_pools"
    assert "One process holds 96 of shop from 127.0.0.1's 96 connections: pid 100" in f.title
    assert any("holds at most 10 by default (max): 96 connections in one process means at "
               "least 10 pools or a raised maximum" in e for e in f.evidence)
    assert any("driver node-postgres (likely" in e for e in f.evidence)


def test_many_processes_with_a_few_each_means_instances_multiply() -> None:
    f = holder_finding(_holder(5, 5, 5, 4))
    assert f.code == "processes_multiply"
    assert f.title.startswith("4 processes hold shop from 127.0.0.1's 19 connections, 4 to 5 each")
    assert [p["connections"] for p in f.data["processes"]] == [5, 5, 5, 4]


def test_one_process_within_one_pool_is_just_named() -> None:
    f = holder_finding(_holder(7, driver=None))
    assert f.code == "single_process"
    assert any("Where no driver shows" in e for e in f.evidence)


# -- real clients: node-postgres pools and psycopg ----------------------------------------------

ONE_PROCESS_APP, MANY_PROCESSES_APP, PYTHON_APP = "shop-pools", "shop-instances", "py-worker"
UNIX_APP = "py-unix"
POOLS, PER_POOL, INSTANCES, PSYCOPG_CONNECTIONS, UNIX_CONNECTIONS = 10, 5, 10, 7, 4
PYTHON_COMM = Path(sys.executable).name[:15]  # the kernel keeps 15 characters


@dataclass(frozen=True)
class Fleet:
    server: LocalServer
    one_process: int
    instances: tuple[int, ...]
    python: int
    unix: int


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One Node process with 10 pg.Pool instances of 5 connections, 10 Node processes with one
    pool of 5 each, one Python process with 7 psycopg connections, all over 127.0.0.1, and one
    with 4 over the server's Unix socket."""
    script = node_app(tmp_path_factory.mktemp("node-app"))
    with LocalServer(max_connections=200) as server, Clients() as clients:
        one = clients.node_pools(script, POOLS, PER_POOL, port=server.port, app=ONE_PROCESS_APP)
        many = tuple(clients.node_pools(script, 1, PER_POOL, port=server.port,
                                        app=MANY_PROCESSES_APP) for _ in range(INSTANCES))
        python = clients.psycopg(server.dsn(application_name=PYTHON_APP), PSYCOPG_CONNECTIONS)
        unix = clients.psycopg(server.dsn(via="unix", application_name=UNIX_APP),
                               UNIX_CONNECTIONS)
        clients.wait_ready()
        yield Fleet(server, one, many, python, unix)


PROCESS_CODES = ("process_many_pools", "processes_multiply", "single_process")


def _diagnose(server: LocalServer, **env: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run([str(AGENT), "diagnose", "--dsn", server.dsn(), "--format", "json"],
                          env=clean_env(**env), capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    findings = json.loads(done.stdout)["targets"][0]["findings"]
    # A holder with a finding of its own carries its processes beneath it (one finding per
    # holder): its process code is then among its causes.
    return {f["data"]["application_name"]: {**f, "code": next(
        c for c in (f["code"], *f["data"].get("causes", ())) if c in PROCESS_CODES)}
        for f in findings
        if {f["code"], *f["data"].get("causes", ())} & set(PROCESS_CODES)}


def test_diagnose_names_each_process_and_tells_the_two_node_cases_apart(fleet: Fleet) -> None:
    found = _diagnose(fleet.server)
    one = found[ONE_PROCESS_APP]
    assert one["code"] == "process_many_pools"
    assert [(p["pid"], p["command"], p["connections"], p["driver"])
            for p in one["data"]["processes"]] == [
        (fleet.one_process, "node", POOLS * PER_POOL, "node-postgres")]
    assert any("50 connections in one process means at least 5 pools or a raised maximum"
               in e for e in one["evidence"])

    many = found[MANY_PROCESSES_APP]
    assert many["code"] == "processes_multiply"
    assert sorted((p["pid"], p["connections"]) for p in many["data"]["processes"]) == sorted(
        (pid, PER_POOL) for pid in fleet.instances)
    assert any(line.startswith(f"{INSTANCES} processes hold {MANY_PROCESSES_APP} from "
                               f"127.0.0.1's {INSTANCES * PER_POOL} connections, {PER_POOL} each")
               for line in (many["title"], *many["evidence"]))

    python = found[PYTHON_APP]
    assert python["code"] == "single_process"
    assert [(p["pid"], p["command"], p["connections"], p["driver"], p["driver_evidence"])
            for p in python["data"]["processes"]] == [
        (fleet.python, PYTHON_COMM, PSYCOPG_CONNECTIONS, "psycopg 3", "loaded")]

    unix = found[UNIX_APP]
    assert unix["code"] == "single_process" and unix["data"]["client_addr"] == "local"
    assert [(p["pid"], p["connections"]) for p in unix["data"]["processes"]] == [
        (fleet.unix, UNIX_CONNECTIONS)]


def test_without_the_capabilities_the_diagnosis_says_what_is_missing(fleet: Fleet) -> None:
    """The agent as another user (nobody, no capabilities) sees the sockets, not their owners."""
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           str(AGENT), "diagnose", "--dsn", fleet.server.dsn(), "--format",
                           "json"], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    findings = {f["code"]: f for f in json.loads(done.stdout)["targets"][0]["findings"]}
    assert not {"process_many_pools", "processes_multiply", "single_process"} & set(findings)
    unreadable = findings["client_processes_unreadable"]
    total = POOLS * PER_POOL + INSTANCES * PER_POOL + PSYCOPG_CONNECTIONS + UNIX_CONNECTIONS
    assert unreadable["data"]["unresolved"] == total
    assert "CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH" in unreadable["recommendation"]


def test_one_setting_turns_process_attribution_off(fleet: Fleet) -> None:
    assert _diagnose(fleet.server, PGCONN_AGENT_CLIENT_PROCESSES="false") == {}


def test_the_agent_exports_connections_per_client_process(fleet: Fleet) -> None:
    listen = f"127.0.0.1:{free_port()}"
    agent = Agent(["--dsn", fleet.server.dsn(), "--listen", listen, "--interval", "1"])
    try:
        agent.started()
        name = c.CLIENT_PROCESS_CONNECTIONS.prometheus_name
        wait_until(lambda: agent.value(name, pid=str(fleet.python)), 20, "a process sample")
        expected = {fleet.one_process: POOLS * PER_POOL, fleet.python: PSYCOPG_CONNECTIONS,
                    fleet.unix: UNIX_CONNECTIONS,
                    **{pid: PER_POOL for pid in fleet.instances}}
        for pid, n in expected.items():
            command = PYTHON_COMM if pid in (fleet.python, fleet.unix) else "node"
            assert agent.value(name, pid=str(pid), command=command) == n, pid
        assert agent.value(c.CLIENT_PROCESS_UNRESOLVED.prometheus_name) == 0
    finally:
        agent.stop()
        agent.close()


def test_the_switch_is_a_config_key_and_an_environment_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGCONN_AGENT_CLIENT_PROCESSES", raising=False)
    path = tmp_path / "agent.toml"
    path.write_text("[agent]\nclient_processes = false\n", encoding="utf-8")
    assert (cfg.load(None).client_processes, cfg.load(path).client_processes) == (True, False)
    for raw, expected in (("off", False), ("TRUE", True), ("0", False)):
        monkeypatch.setenv("PGCONN_AGENT_CLIENT_PROCESSES", raw)
        assert cfg.load(None).client_processes is expected, raw
    monkeypatch.setenv("PGCONN_AGENT_CLIENT_PROCESSES", "maybe")
    with pytest.raises(ConfigError, match=r"^environment: PGCONN_AGENT_CLIENT_PROCESSES: "
                                          r"expected true or false, found 'maybe'$"):
        cfg.load(None)
    monkeypatch.delenv("PGCONN_AGENT_CLIENT_PROCESSES")
    path.write_text('[agent]\nclient_processes = "no"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"agent\.client_processes"):
        cfg.load(path)
