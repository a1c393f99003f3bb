"""TLS: to PostgreSQL with ``sslmode=verify-full``, and OTLP to a TLS collector.

The tests make their own CAs with the ``openssl`` command line. The server accepts TCP clients
only over TLS (``hostssl``; ``hostnossl ... reject``). The agent verifies the server's
certificate against the test CA; with another CA, or a certificate for another name, it fails
with one line (``diagnose`` exit 3, finding ``target_unreachable`` of kind ``auth``: the
*server* failed to authenticate) and the daemon keeps retrying without a traceback. OTLP/gRPC
goes to the in-test receiver over TLS with the CA given as ``[otlp] certificate`` or as
``OTEL_EXPORTER_OTLP_CERTIFICATE``; with the wrong CA nothing is delivered and the daemon lives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agent_e2e import Agent, wait_until
from certificates import (
    CertAuthority,
    hand_to_postgres,
    issue_cert,
    make_ca,
    postgres_readable_dir,
)
from diagnose_support import diagnose_report, run_diagnose
from otlp_receiver import GrpcReceiver

from agent import contract as c
from agent.demo.server import LocalServer


@dataclass(frozen=True)
class Pki:
    ca: CertAuthority
    other_ca: CertAuthority
    wrong_name_cert: tuple[Path, Path]
    server_cert: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with postgres_readable_dir() as d:
        ca, other = make_ca(d / "ca", "pgconn-test-ca"), make_ca(d / "other", "other-ca")
        server = issue_cert(ca, d, "server")
        wrong = issue_cert(ca, d, "wrong-name", ("DNS:db.example.invalid",))
        hand_to_postgres(server[0], wrong[0], private=(server[1], wrong[1]))
        yield Pki(ca, other, wrong, server)


def tls_server(cert: tuple[Path, Path]) -> LocalServer:
    settings = {"ssl": "on", "ssl_cert_file": f"'{cert[0]}'", "ssl_key_file": f"'{cert[1]}'"}
    hba = ["local all all trust", "hostssl all all 127.0.0.1/32 trust",
           "hostnossl all all 127.0.0.1/32 reject"]
    return LocalServer(max_connections=30, settings=settings, hba=hba)


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[LocalServer]:
    with tls_server(pki.server_cert) as srv:
        srv.execute("CREATE ROLE monitor LOGIN IN ROLE pg_monitor")
        yield srv


def verified_dsn(server: LocalServer, ca: Path, host: str = "127.0.0.1") -> str:
    return server.dsn(user="monitor", sslmode="verify-full", sslrootcert=str(ca)).replace(
        "host=127.0.0.1", f"host={host}")


def test_verify_full_against_the_test_ca(server: LocalServer, pki: Pki) -> None:
    code, report = diagnose_report(verified_dsn(server, pki.ca.cert))
    assert code in (0, 1), report
    assert report["slots"]["client_backends"] >= 1
    with Agent(["--dsn", verified_dsn(server, pki.ca.cert), "--listen", "127.0.0.1:0",
                "--interval", "0.3"]).started() as agent:
        wait_until(lambda: agent.value(c.AGENT_UP.prometheus_name) == 1, 15, "up over TLS")
        rows = server.execute("SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN "
                              "pg_stat_activity a USING (pid) "
                              "WHERE a.application_name = 'pgconn-agent'")
        assert rows and all(ssl for ssl, _ in rows), rows
        assert {v for _, v in rows} <= {"TLSv1.2", "TLSv1.3"}
        assert agent.stop()[0] == 0


@pytest.mark.parametrize("case", ["wrong CA", "wrong name", "no TLS"])
def test_failed_verification_is_one_line(server: LocalServer, pki: Pki, case: str) -> None:
    if case == "wrong name":  # the test CA's certificate, for db.example.invalid only
        with tls_server(pki.wrong_name_cert) as other:
            _check_refused(verified_dsn(other, pki.ca.cert), case)
    elif case == "wrong CA":
        _check_refused(verified_dsn(server, pki.other_ca.cert), case)
    else:
        _check_refused(server.dsn(user="monitor", sslmode="disable"), case)


def _check_refused(dsn: str, case: str) -> None:
    code, out = run_diagnose("--dsn", dsn, "--format", "json")
    assert code == 3, out
    [report] = json.loads(out)["targets"]
    [finding] = report["findings"]
    assert finding["code"] == "target_unreachable"
    assert finding["data"] == {"error": "auth"}, (case, finding)
    [evidence] = finding["evidence"]
    assert "\n" not in evidence and "Traceback" not in out
    needle = {"wrong CA": "certificate verify failed", "wrong name": "does not match host name",
              "no TLS": "no encryption"}[case]
    assert needle in evidence, (case, evidence)
    assert "certificate" in finding["recommendation"] or case == "no TLS"


@pytest.fixture(scope="module")
def tls_receiver(pki: Pki) -> Iterator[GrpcReceiver]:
    cert, key = pki.server_cert
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    with GrpcReceiver(server_credentials=credentials) as rec:
        yield rec


def otlp_config(tmp_path: Path, receiver: GrpcReceiver, server: LocalServer, pki: Pki,
                otlp_ca: Path | None) -> Path:
    """Poll the TLS server (verify-full) and export over OTLP/gRPC with TLS."""
    path = tmp_path / "agent.toml"
    certificate = f'certificate = "{otlp_ca}"\n' if otlp_ca else ""
    path.write_text(f'[agent]\ninterval = 0.3\nlisten = ""\n\n[otlp]\nenabled = true\n'
                    f'endpoint = "{receiver.endpoint}"\nprotocol = "grpc"\n{certificate}'
                    f"export_interval = 0.3\n\n[[targets]]\nname = \"tls\"\n"
                    f'dsn = "{verified_dsn(server, pki.ca.cert)}"\n')
    return path


@pytest.mark.parametrize("via", ["config", "env"])
def test_otlp_over_tls_with_the_test_ca(tmp_path: Path, server: LocalServer, pki: Pki,
                                        tls_receiver: GrpcReceiver, via: str) -> None:
    assert tls_receiver.endpoint.startswith("https://")
    config = otlp_config(tmp_path, tls_receiver, server, pki,
                         pki.ca.cert if via == "config" else None)
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca.cert)} if via == "env" else {}
    tls_receiver.clear()
    with Agent(["--config", str(config)], env=env).started() as agent:
        tls_receiver.wait_for(lambda: tls_receiver.latest_value(c.AGENT_UP.name,
                                                                target="tls") == 1,
                              20, "up = 1 over OTLP/TLS")
        assert agent.stop()[0] == 0


def test_otlp_with_the_wrong_ca_delivers_nothing_and_the_daemon_lives(
        tmp_path: Path, server: LocalServer, pki: Pki, tls_receiver: GrpcReceiver) -> None:
    config = otlp_config(tmp_path, tls_receiver, server, pki, pki.other_ca.cert)
    before = tls_receiver.total
    with Agent(["--config", str(config)], env={"OTEL_EXPORTER_OTLP_TIMEOUT": "1"}) as agent:
        agent.started()
        wait_until(lambda: any(r.get("msg") == "OTLP export failing" for r in agent.logs()),
                   20, "the export failure warning")
        assert tls_receiver.total == before
        assert agent.proc.poll() is None
        code, _ = agent.stop(timeout=20)
        assert code == 0
        assert "Traceback" not in agent.stderr()
