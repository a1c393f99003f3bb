"""The Dockerfile checked statically and its HEALTHCHECK run for real (test_image.py builds it)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import pytest
from certificates import issue_cert, make_ca

from agent import config, webconfig
from agent.errors import ConfigError
from agent.export.http import AgentHTTPServer

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "cc ", "make", "libpq-dev", "python3-dev")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def build_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for kind, arg in instructions():
        if kind == "ARG" and "=" in arg:
            match = re.match(r"(\w+)=(\S+)", arg)
            assert match, f"ARG {arg}: expected NAME=VALUE"
            args[match[1]] = match[2]
    return args


def resolve(image: str) -> str:
    args = build_args()
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image)


def final() -> list[tuple[str, str]]:
    return stages()[-1]


def test_multi_stage_on_a_slim_python_base() -> None:
    froms = [resolve(ins[1].split()[0]) for stage in stages() for ins in stage[:1]]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", froms[-1]), froms[-1]
    copies = [arg for kind, arg in final() if kind == "COPY"]
    assert any(arg.startswith("--from=") for arg in copies), "runtime stage copies no build"


def test_no_compilers_or_package_installs_in_the_final_stage() -> None:
    for kind, arg in final():
        if kind == "RUN":
            assert "apt-get" not in arg and "pip install" not in arg, arg
            assert not any(c in arg for c in COMPILERS), arg


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [arg for kind, arg in final() if kind == "USER"]
    assert users, "no USER in the final stage"
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), f"USER {users[-1]} is not numeric"
    kinds = [kind for kind, _ in final()]
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    assert users[-1].split(":")[0] == "10001", "the Helm chart's runAsUser is 10001"


def test_entrypoint_is_the_console_script() -> None:
    (entry,) = [json.loads(arg) for kind, arg in final() if kind == "ENTRYPOINT"]
    assert entry == ["pgconn-agent"]
    (cmd,) = [json.loads(arg) for kind, arg in final() if kind == "CMD"]
    assert cmd[0] == "run"
    env = " ".join(arg for kind, arg in final() if kind == "ENV")
    # Only the default: PGCONN_AGENT_LISTEN would override a mounted config file's `listen`.
    assert "PGCONN_AGENT_DEFAULT_LISTEN=0.0.0.0:9188" in env
    assert "PGCONN_AGENT_LISTEN=" not in env
    assert "/opt/pgconn-agent/bin" in env
    assert any(kind == "EXPOSE" and arg == "9188" for kind, arg in final())


def test_oci_labels_name_source_version_and_revision() -> None:
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"',
                             " ".join(arg for kind, arg in final() if kind == "LABEL")))
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    args = [arg.split("=")[0] for kind, arg in final() if kind == "ARG"]
    assert {"VERSION", "REVISION"} <= set(args), "labels read build args of the final stage"


@pytest.mark.parametrize(("env", "file_listen", "want"), [
    ({}, None, "127.0.0.1:9188"),
    ({"PGCONN_AGENT_DEFAULT_LISTEN": "0.0.0.0:9188"}, None, "0.0.0.0:9188"),
    ({"PGCONN_AGENT_DEFAULT_LISTEN": "0.0.0.0:9188"}, "127.0.0.1:9300", "127.0.0.1:9300"),
    ({"PGCONN_AGENT_DEFAULT_LISTEN": "0.0.0.0:9188", "PGCONN_AGENT_LISTEN": "[::]:9400"},
     "127.0.0.1:9300", "[::]:9400"),
])
def test_the_image_default_listen_yields_to_a_config_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str],
        file_listen: str | None, want: str) -> None:
    for var in ("PGCONN_AGENT_DEFAULT_LISTEN", "PGCONN_AGENT_LISTEN"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    path = tmp_path / "config.toml"
    path.write_text(f'[agent]\nlisten = "{file_listen}"\n' if file_listen else "")
    assert config.load(path).listen == want


def test_a_malformed_default_listen_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCONN_AGENT_DEFAULT_LISTEN", "9188")
    with pytest.raises(ConfigError, match=r"^environment: PGCONN_AGENT_DEFAULT_LISTEN: "
                                          r"expected HOST:PORT, found '9188'$"):
        config.load(None)


def healthcheck_argv() -> list[str]:
    (check,) = [arg for kind, arg in final() if kind == "HEALTHCHECK"]
    assert "curl" not in check and "wget" not in check
    argv = json.loads(check[check.index("CMD") + 3:].strip())
    assert argv == ["pgconn-agent", "healthcheck"]
    return [sys.executable, "-m", "agent", *argv[1:]]


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    status = {"/healthz": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], status
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("variable", ["PGCONN_AGENT_LISTEN", "PGCONN_AGENT_DEFAULT_LISTEN",
                                      "PGCONN_AGENT_CONFIG"])
def test_healthcheck_command_probes_healthz(health_server: tuple[int, dict[str, int]],
                                            variable: str, tmp_path: Path) -> None:
    port, status = health_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCONN_AGENT_")}
    env[variable] = f"0.0.0.0:{port}"
    if variable == "PGCONN_AGENT_CONFIG":
        env[variable] = str(tmp_path / "config.toml")
        (tmp_path / "config.toml").write_text(f'[agent]\nlisten = "127.0.0.1:{port}"\n')
    argv = healthcheck_argv()
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
    status["/healthz"] = 503
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
    status["/healthz"] = 401  # basic auth guards /healthz too: the listener is alive
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0


def test_healthcheck_over_tls_with_basic_auth(tmp_path: Path) -> None:
    """The agent's own listener behind a web config (TLS and basic auth) is alive."""
    ca = make_ca(tmp_path, "ca")
    cert, key = issue_cert(ca, tmp_path, "agent")
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                   f"basic_auth_users:\n  scraper: {hashed}\n")
    server = AgentHTTPServer("127.0.0.1:0", None, lambda: (True, "ok"), webconfig.load(web))
    server.start()
    address = server.address
    try:
        result = subprocess.run([*healthcheck_argv(), "--listen", address],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "https://" in result.stdout and "HTTP 401" in result.stdout
    finally:
        server.stop()
    result = subprocess.run([*healthcheck_argv(), "--listen", address],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stderr.startswith("unhealthy: "), result.stderr


def test_dockerignore_keeps_the_build_context_small_and_sufficient() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(rel: str) -> bool:
        result = False
        for pat in patterns:
            negate = pat.startswith("!")
            pat = pat.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(rel, pat) or rel.startswith(pat + "/") or (
                    pat.startswith("**/") and fnmatch.fnmatch(Path(rel).name, pat[3:])):
                result = not negate
        return result

    copied = [src for kind, arg in stages()[0] if kind == "COPY"
              for src in arg.split()[:-1] if not src.startswith("--")]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: missing from the repository"
        assert not ignored(src), f"COPY {src}: excluded by .dockerignore"
    for rel in (".git", ".venv", ".tools", "tests", "helm", "agent/__pycache__"):
        assert ignored(rel), f"{rel} would be sent to the Docker daemon"
