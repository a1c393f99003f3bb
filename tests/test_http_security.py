"""TLS and basic authentication of the HTTP endpoint from an exporter-toolkit web config file:
real TLS handshakes against a test CA, real bcrypt hashes, and one-line errors for bad files.
About 10 s.
"""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from agent_e2e import AGENT, Agent, clean_env, wait_until
from certificates import CertAuthority, issue_cert, make_ca

from agent import webconfig
from agent.demo.server import LocalServer
from agent.errors import ConfigError
from agent.export.http import AgentHTTPServer, Limits

PASSWORD = "s3cret pass"
HEAD_TIMEOUT = 1.0
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertAuthority, Path, Path, Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "test-ca")
    cert, key = issue_cert(ca, directory, "agent")
    client_cert, client_key = issue_cert(ca, directory, "scraper", sans=("DNS:scraper",),
                                         usage="clientAuth")
    return ca, cert, key, client_cert, client_key


def web_yml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def tls_yml(pki: tuple[CertAuthority, Path, Path, Path, Path], extra: str = "") -> str:
    _, cert, key, _, _ = pki
    return f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n{extra}"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    servers: list[AgentHTTPServer] = []

    def start(text: str) -> str:
        server = AgentHTTPServer("127.0.0.1:0", None, lambda: (True, "ok"),
                                 webconfig.load(web_yml(tmp_path, text)),
                                 Limits(head_timeout=HEAD_TIMEOUT))
        server.start()
        servers.append(server)
        return server.address

    yield start
    for server in servers:
        server.stop()


def get(url: str, *, context: ssl.SSLContext | None = None, user: str | None = None,
        password: str = PASSWORD) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        assert exc.code != 401 or exc.headers["WWW-Authenticate"].startswith("Basic")
        return exc.code


def client_context(ca: CertAuthority, cert: tuple[Path, Path] | None = None,
                   maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    if cert:
        ctx.load_cert_chain(*cert)
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def test_tls_serves_only_tls(serve, pki) -> None:  # type: ignore[no-untyped-def]
    address = serve(tls_yml(pki))
    assert get(f"https://{address}/healthz", context=client_context(pki[0])) == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(f"http://{address}/healthz")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"https://{address}/healthz", context=ssl.create_default_context())


def test_a_tls_handshake_that_never_comes_is_cut_off(serve, pki) -> None:  # type: ignore[no-untyped-def]
    host, _, port = serve(tls_yml(pki)).rpartition(":")
    with socket.create_connection((host, int(port)), timeout=HEAD_TIMEOUT + 5) as sock:
        start = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server, no handshake sent
        assert time.monotonic() - start < HEAD_TIMEOUT + 2


def test_tls_min_version_is_enforced(serve, pki) -> None:  # type: ignore[no-untyped-def]
    address = serve(tls_yml(pki, "  min_version: TLS13\n"))
    ca = pki[0]
    assert get(f"https://{address}/healthz", context=client_context(ca)) == 200
    with pytest.raises(urllib.error.URLError):
        get(f"https://{address}/healthz",
            context=client_context(ca, maximum=ssl.TLSVersion.TLSv1_2))


def test_client_certificates_are_required_and_verified(serve, pki) -> None:  # type: ignore[no-untyped-def]
    ca, _, _, client_cert, client_key = pki
    address = serve(tls_yml(pki, f"  client_auth_type: RequireAndVerifyClientCert\n"
                                 f"  client_ca_file: {ca.cert}\n"))
    url = f"https://{address}/healthz"
    assert get(url, context=client_context(ca, (client_cert, client_key))) == 200
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        get(url, context=client_context(ca))


def test_basic_auth_guards_every_path_like_exporter_toolkit(serve) -> None:  # type: ignore[no-untyped-def]
    address = serve(f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    for path in ("/metrics", "/healthz", "/readyz"):
        assert get(f"http://{address}{path}") == 401
    assert get(f"http://{address}/healthz", user="prometheus") == 200
    assert get(f"http://{address}/healthz", user="prometheus", password="wrong") == 401
    assert get(f"http://{address}/healthz", user="nobody") == 401
    assert get(f"http://{address}/healthz", user="prometheus", password="x" * 100) == 401
    assert get(f"http://{address}/healthz", user="prometheus") == 200  # cached outcome


@pytest.mark.parametrize(("text", "key"), [
    ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
     "tls_server_config.cert_file: cannot load /nonexistent.crt"),
    ("tls_server_config:\n  cert_file: a.crt\n", "tls_server_config.key_file: missing"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequestClientCert\n",
     "tls_server_config.client_auth_type: expected one of"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n"
     "  client_auth_type: RequireAndVerifyClientCert\n",
     "tls_server_config.client_ca_file: missing"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n",
     "tls_server_config.min_version: expected one of"),
    ("tls_server_config:\n  cipher_suites: []\n", "tls_server_config.cipher_suites: unknown key"),
    ("basic_auth_users:\n  prometheus: plaintext-password\n",
     "basic_auth_users.prometheus: expected a bcrypt hash"),
    ("http_server_config: {}\n", "http_server_config: unknown key"),
    ("tls_server_config: [\n", "invalid YAML"),
])
def test_bad_web_config_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        webconfig.load(web_yml(tmp_path, text))
    assert key in str(info.value)
    assert "\n" not in str(info.value)
    assert "plaintext-password" not in str(info.value)


def test_check_config_and_run_reject_a_bad_web_config_file(tmp_path: Path) -> None:
    web = web_yml(tmp_path, "basic_auth_users:\n  prometheus: nope\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nweb_config_file = "{web}"\n\n[[targets]]\ndsn = "host=x"\n')
    for args in (["check-config", str(config)],
                 ["run", "--dsn", "host=x", "--web.config.file", str(web)]):
        result = subprocess.run([str(AGENT), *args], capture_output=True, text=True,
                                env=clean_env(), timeout=30, check=False)
        assert result.returncode == 2, result
        assert result.stderr.count("\n") == 1, result.stderr
        assert "web_config_file" in result.stderr
        assert "basic_auth_users.prometheus: expected a bcrypt hash" in result.stderr


def test_agent_serves_metrics_over_tls_with_basic_auth(e2e_server: LocalServer, pki,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path) -> None:
    web = web_yml(tmp_path, tls_yml(pki) + f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    with Agent(["--dsn", e2e_server.dsn(), "--listen", "127.0.0.1:0", "--interval", "1"],
               env={"PGCONN_AGENT_WEB_CONFIG_FILE": str(web)}) as agent:
        agent.started()
        url = f"https://{agent.listen}/metrics"
        ctx = client_context(pki[0])
        assert wait_until(lambda: get(url, context=ctx, user="prometheus") == 200,
                          what="an authenticated scrape over TLS")
        assert get(url, context=ctx) == 401
        assert get(url, context=ctx, user="prometheus", password="guess") == 401
