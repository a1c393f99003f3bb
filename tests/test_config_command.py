"""Configuration as the installed command takes it: passwords that cannot be read, targets
without a DSN, libpq's environment alone, what check-config shows, thresholds that make no sense.

Everything runs the installed ``pgconn-agent`` command; the libpq-environment test diagnoses a
real server. About 10 s.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from agent_e2e import AGENT, clean_env

from agent import config as agent_config
from agent import spec
from agent.demo.server import LocalServer
from agent.errors import ConfigError

UNREACHABLE = "host=127.0.0.1 port=1 user=pgconn_agent connect_timeout=1"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AGENT), *args], capture_output=True, text=True,
                          env=clean_env(**env), timeout=60, check=False)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("pgconn-agent: error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def config_file(tmp_path: Path, target: str, head: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'{head}\n[[targets]]\nname = "main"\ndsn = "{UNREACHABLE}"\n{target}\n')
    return path


def world_readable(tmp_path: Path) -> Path:
    path = tmp_path / "pw-world"
    path.write_text("secret\n")
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("kind", ["missing", "directory", "world-readable"])
def test_a_password_file_that_cannot_be_used_is_bad_input(tmp_path: Path, kind: str) -> None:
    password_file = {"missing": lambda: tmp_path / "nope",
                     "directory": lambda: tmp_path,
                     "world-readable": lambda: world_readable(tmp_path)}[kind]()
    config = config_file(tmp_path, f'password_file = "{password_file}"')
    why = "readable by every user (mode 0644)" if kind == "world-readable" else "cannot read"
    for command in ("diagnose", "check-config"):
        args = ["diagnose", "--config", str(config)] if command == "diagnose" \
            else ["check-config", str(config)]
        one_line_error(cli(*args), str(config), "target main", str(password_file), why)


def test_a_private_or_group_readable_password_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("secret\n")
    path.chmod(0o640)
    result = cli("check-config", str(config_file(tmp_path, f'password_file = "{path}"')))
    assert result.returncode == 0, result.stderr
    assert "secret" not in result.stdout


def test_a_systemd_credential_outside_systemd(tmp_path: Path) -> None:
    config = config_file(tmp_path, 'password_credential = "pgpassword"')
    one_line_error(cli("diagnose", "--config", str(config)), "password_credential 'pgpassword'",
                   "LoadCredential=")
    checked = cli("check-config", str(config))  # run by hand before installing the unit
    assert checked.returncode == 0, checked.stderr
    assert "note: target main: password_credential 'pgpassword'" in checked.stdout
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "pgpassword").write_text("secret")
    (credentials / "pgpassword").chmod(0o400)
    checked = cli("check-config", str(config), CREDENTIALS_DIRECTORY=str(credentials))
    assert checked.returncode == 0 and "note:" not in checked.stdout, checked


def test_a_target_without_dsn_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[[targets]]\ndsn = "host=a"\n\n[[targets]]\nname = "b"\n')
    one_line_error(cli("check-config", str(config)), "targets[1].dsn: missing")


def test_libpq_environment_alone_is_one_target(pg: LocalServer) -> None:
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres"}
    result = cli("diagnose", "--format", "json", **env)
    assert result.returncode in (0, 1, 3), result.stderr
    (report,) = json.loads(result.stdout)["targets"]
    assert report["target"] == f"127.0.0.1:{pg.port}/postgres"
    assert report["slots"]["max_connections"] == 100  # it reached the server
    one_line_error(cli("diagnose"), "no target configured", "PGHOST")


def test_check_config_prints_every_effective_setting(tmp_path: Path) -> None:
    config = config_file(tmp_path, "", head='[agent]\nlog_format = "json"\nlog_level = "debug"\n'
                         '\n[otlp]\nendpoint = "https://collector:4317"\n'
                         'headers = {authorization = "Bearer t0ken-value"}\n'
                         '\n[thresholds]\nutilization_warning = 0.7\n')
    result = cli("check-config", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "log format json, level debug" in out
    assert "otlp: on, endpoint https://collector:4317" in out
    assert "authorization=<redacted>" in out and "t0ken" not in out
    assert "utilization_warning 0.7, utilization_critical 0.95" in out
    assert "idle_in_transaction_critical 300.0" in out


@pytest.mark.parametrize(("thresholds", "message"), [
    ({"utilization_warning": 0.99, "utilization_critical": 0.5},
     "thresholds.utilization_warning: expected less than utilization_critical (0.5), "
     "found 0.99"),
    ({"utilization_warning": 0.99}, "expected less than utilization_critical (0.95)"),
    ({"holder_share": 7}, "thresholds.holder_share: expected a ratio in (0, 1], found 7.0"),
    ({"utilization_critical": 1.5}, "thresholds.utilization_critical: expected a ratio"),
    ({"limit_share": 0}, "thresholds.limit_share: expected a number > 0"),
    ({"idle_in_transaction_warning": 400},
     "thresholds.idle_in_transaction_warning: expected less than idle_in_transaction_critical"),
])
def test_thresholds_must_make_sense(thresholds: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        agent_config.parse({"thresholds": thresholds}, "agent.toml")
    assert message in str(info.value)


def test_thresholds_at_the_edges_are_accepted() -> None:
    cfg = agent_config.parse({"thresholds": {"utilization_warning": 0.99,
                                             "utilization_critical": 1.0, "holder_share": 1}},
                             "agent.toml")
    assert cfg.thresholds[spec.UTILIZATION_CRITICAL] == 1.0
