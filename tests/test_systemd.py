"""The systemd unit: systemd-analyze verify and security, and the agent run exactly as ExecStart.

Nothing here skips: a missing systemd-analyze, unshare or PostgreSQL is a failure.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_e2e import AGENT
from certificates import issue_cert, make_ca
from systemd_support import UNIT, systemd_analyze, unit_settings, verifiable

from agent import config as agent_config
from agent import webconfig
from agent.demo.server import LocalServer, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "systemd" / "config.toml"
MAX_EXPOSURE = 2.0
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWORD = "s3cret-for-the-unit-test"


SETTINGS = unit_settings(UNIT.read_text(encoding="utf-8"))


def single(key: str) -> str:
    (value,) = SETTINGS[key]
    return value


def exec_start() -> list[str]:
    return shlex.split(single("ExecStart"))


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    return verifiable(UNIT, tmp_path)


def test_verify_prints_nothing(verifiable_unit: Path) -> None:
    result = subprocess.run([systemd_analyze(), "verify", str(verifiable_unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_of_the_shipped_file_only_misses_the_program() -> None:
    """The copy above hides nothing but the absent install path."""
    program = exec_start()[0]
    result = subprocess.run([systemd_analyze(), "verify", str(UNIT)],
                            capture_output=True, text=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    if Path(program).exists():
        assert output == ""
    else:
        assert output.splitlines() == [
            f"{UNIT.name}: Command {program} is not executable: No such file or directory"]


def test_security_exposure_at_most_2(verifiable_unit: Path) -> None:
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager",
                             str(verifiable_unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_contract() -> None:
    assert exec_start() == ["/opt/pgconn-agent/bin/pgconn-agent", "run", "--config",
                            "/etc/pgconn-agent/config.toml"]
    assert single("DynamicUser") == "yes"
    assert single("LoadCredential") == "pgpassword:/etc/pgconn-agent/pgpassword"
    assert single("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert single("Restart") == "on-failure"
    assert single("RestartSec")
    assert single("StartLimitBurst") and single("StartLimitIntervalSec")
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "CapabilityBoundingSet": ""}.items():
        assert single(key) == value, key
    assert single("RestrictAddressFamilies") == "AF_INET AF_INET6 AF_UNIX"
    assert SETTINGS["SystemCallFilter"][0] == "@system-service"
    assert single("MemoryMax")
    assert single("WantedBy") == "multi-user.target"


def test_example_config_uses_the_credential() -> None:
    cfg = agent_config.parse(tomllib.loads(EXAMPLE_CONFIG.read_text()), str(EXAMPLE_CONFIG))
    credential = single("LoadCredential").split(":", 1)[0]
    assert cfg.targets
    assert all(t.password_credential == credential for t in cfg.targets)
    assert all("password=" not in t.dsn for t in cfg.targets)


def test_example_web_config_loads_with_real_files(tmp_path: Path) -> None:
    """systemd/web.yml, its paths pointed at a real certificate and key, gives a TLS listener."""
    ca = make_ca(tmp_path, "ca")
    cert, key = issue_cert(ca, tmp_path, "agent")
    text = (ROOT / "systemd" / "web.yml").read_text()
    assert "key_file: /run/credentials/pgconn-agent.service/tls.key" in text
    assert "tls.key:/etc/pgconn-agent/tls.key" in UNIT.read_text()
    web = tmp_path / "web.yml"
    web.write_text(text.replace("/etc/pgconn-agent/tls.crt", str(cert))
                   .replace("/run/credentials/pgconn-agent.service/tls.key", str(key)))
    assert webconfig.load(web).ssl_context is not None
    assert '# web_config_file = "/etc/pgconn-agent/web.yml"' in EXAMPLE_CONFIG.read_text()


# --- the agent started exactly as the unit starts it ---------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    """A real server that only lets pgconn_agent in with its password over TCP."""
    srv = LocalServer(hba=["local all all trust",
                           "host all pgconn_agent 127.0.0.1/32 scram-sha-256",
                           "host all all 127.0.0.1/32 reject"])
    srv.start()
    try:
        srv.execute(f"CREATE ROLE pgconn_agent LOGIN PASSWORD '{PASSWORD}' IN ROLE pg_monitor",
                    "CREATE DATABASE appdb")
        yield srv
    finally:
        srv.stop()


def config_text(server: LocalServer, port: int, *, second: bool = False) -> str:
    """The shipped example config, pointed at the test server (and optionally a 2nd target)."""
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    dsn = server.dsn(user="pgconn_agent", dbname="postgres", application_name="pgconn-agent")
    text, n = re.subn(r'(?m)^dsn = ".*"$', lambda _: f"dsn = {toml_str(dsn)}", text)
    assert n == 1
    text, n = re.subn(r'(?m)^listen = "[^"]*"', f'listen = "127.0.0.1:{port}"', text)
    assert n == 1
    text, n = re.subn(r"(?m)^interval = \d+", "interval = 1", text)
    assert n == 1
    if second:
        dsn2 = server.dsn(user="pgconn_agent", dbname="appdb")
        text += (f'\n[[targets]]\nname = "second"\ndsn = {toml_str(dsn2)}\n'
                 f'password_credential = "pgpassword"\n')
    tomllib.loads(text)
    return text


def toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def mount_point(path: Path) -> Iterator[Path]:
    """An existing directory to bind-mount over (created for the test if absent)."""
    created = not path.exists()
    if created:
        path.mkdir(parents=True, mode=0o755)
    try:
        yield path
    finally:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def wait_for_series(url: str, target: str, proc: subprocess.Popen[str],
                    timeout: float = 60.0) -> str:
    pattern = re.compile(rf'^pgconn_agent_up\{{[^}}]*target="{re.escape(target)}"[^}}]*\}} '
                         rf"1(\.0)?$", re.M)
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"agent exited with {proc.returncode}"
        status, body = get(url)
        if status == 200 and pattern.search(body):
            return body
        time.sleep(0.3)
    raise AssertionError(f"no pgconn_agent_up{{target={target!r}}} 1 within {timeout}s:\n"
                         + "\n".join(line for line in body.splitlines()
                                     if line.startswith("pgconn_agent")))


def test_agent_runs_as_exec_start_and_reloads_on_sighup(server: LocalServer) -> None:
    """ExecStart's argv, unchanged, in a private mount namespace where /etc/pgconn-agent holds
    the test config and /opt/pgconn-agent is this venv; as an unprivileged user with no new
    privileges, the unit's Environment=, and the password only in $CREDENTIALS_DIRECTORY."""
    assert os.geteuid() == 0, "needs root for the mount namespace (CI runs as root)"
    assert shutil.which("unshare") and shutil.which("setpriv"), "util-linux missing"
    argv = exec_start()
    config_path = Path(argv[argv.index("--config") + 1])
    venv = Path(argv[0]).parent.parent
    nobody = pwd.getpwnam("nobody")
    port = free_port()

    work = Path(tempfile.mkdtemp(prefix="pgconn-unit-"))
    work.chmod(0o755)
    etc = work / "etc"
    creds = work / "credentials"
    etc.mkdir(mode=0o755)
    creds.mkdir(mode=0o700)
    (etc / config_path.name).write_text(config_text(server, port), encoding="utf-8")
    (etc / config_path.name).chmod(0o644)
    credential = single("LoadCredential").split(":", 1)[0]
    (creds / credential).write_text(PASSWORD + "\n", encoding="utf-8")
    (creds / credential).chmod(0o400)
    for path in (creds, creds / credential):  # systemd hands them to the service user
        os.chown(path, nobody.pw_uid, nobody.pw_gid)

    env = {"PATH": SYSTEMD_PATH, "CREDENTIALS_DIRECTORY": str(creds)}
    for assignment in SETTINGS.get("Environment", []):
        for item in shlex.split(assignment):
            name, value = item.split("=", 1)
            env[name] = value

    script = ('mount --bind "$1" "$2" && mount --bind "$3" "$4" && shift 4 && '
              'exec setpriv --reuid="$UID_" --regid="$GID_" --clear-groups --no-new-privs "$@"')
    with mount_point(config_path.parent), mount_point(venv):
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
             str(etc), str(config_path.parent), str(AGENT.parent.parent), str(venv), *argv],
            env={**env, "UID_": str(nobody.pw_uid), "GID_": str(nobody.pw_gid)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            body = wait_for_series(f"{base}/metrics", "main", proc)
            assert 'target="second"' not in body
            assert get(f"{base}/healthz")[0] == 200
            deadline = time.monotonic() + 30
            while get(f"{base}/readyz")[0] != 200:
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.3)

            # systemctl reload: a second target appears without a restart.
            (etc / config_path.name).write_text(config_text(server, port, second=True),
                                                encoding="utf-8")
            reload_cmd = single("ExecReload").replace("$MAINPID", str(proc.pid))
            subprocess.run(shlex.split(reload_cmd), check=True, timeout=10)
            wait_for_series(f"{base}/metrics", "second", proc)
            wait_for_series(f"{base}/metrics", "main", proc, timeout=5)

            # systemctl stop: SIGTERM, a clean exit 0.
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, output
            assert PASSWORD not in output
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
            shutil.rmtree(work, ignore_errors=True)
