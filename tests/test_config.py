"""Configuration: unknown keys, types, DSNs and passwords, overrides; one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config as cfg
from agent import spec
from agent.collect.client import connection_string
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def error(path: Path | None, overrides: dict[str, object] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        cfg.load(path, overrides)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_full_config(tmp_path: Path) -> None:
    path = write(tmp_path, """
[agent]
interval = 5
max_groups = 50
dimensions = ["datname", "application_name", "state"]
listen = "0.0.0.0:9188"
log_format = "json"

[otlp]
endpoint = "https://collector:4317"
protocol = "grpc"
headers = { authorization = "Bearer x" }
export_interval = 10

[thresholds]
utilization_warning = 0.7
idle_hoard_count = 20

[[targets]]
name = "orders"
dsn = "host=db1 dbname=orders user=pgconn"
password_file = "/run/secrets/pg"

[[targets]]
dsn = "postgresql://pgconn@db2:6432/app"
interval = 30
""")
    c = cfg.load(path)
    assert c.interval == 5.0 and c.max_groups == 50 and c.log_format == "json"
    assert c.dimensions == ("datname", "application_name", "state")
    assert c.otlp.headers == {"authorization": "Bearer x"} and c.otlp.export_interval == 10
    assert c.thresholds[spec.UTILIZATION_WARNING] == 0.7
    assert c.thresholds[spec.IDLE_HOARD_COUNT] == 20
    assert [(t.name, t.interval) for t in c.targets] == [("orders", 5.0), ("db2:6432/app", 30.0)]
    assert c.targets[0].password_file == Path("/run/secrets/pg")


@pytest.mark.parametrize(("text", "expected"), [
    ("[agent]\nintervall = 5\n", "agent.intervall: unknown key"),
    ("[agent]\ninterval = 'soon'\n", "agent.interval: expected float, found str 'soon'"),
    ("[agent]\ninterval = -1\n", "agent.interval: expected a number > 0, found -1.0"),
    ("[agent]\nmax_groups = 1\n", "agent.max_groups: expected an integer >= 2, found 1"),
    ("[agent]\ndimensions = ['pid']\n", "agent.dimensions: expected names from"),
    ("[agent]\nlisten = 'nowhere'\n", "agent.listen: expected HOST:PORT, found 'nowhere'"),
    ("[otlp]\nprotocol = 'udp'\n", "otlp.protocol: expected 'grpc' or 'http/protobuf'"),
    ("[thresholds]\nholder_share = 0\n", "thresholds.holder_share: expected a number > 0"),
    ("[[targets]]\ndsn = 'host=x'\nport = 5\n", "targets[0].port: unknown key"),
    ("[[targets]]\nname = 'a b'\ndsn = 'host=x'\n", "targets[0].name: expected 1-64 characters"),
    ("[[targets]]\nname='a'\ndsn='host=x'\n[[targets]]\nname='a'\ndsn='host=y'\n",
     "targets[1].name: duplicate target name 'a'"),
    ("[agent\n", "invalid TOML"),
])
def test_errors_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    message = error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_bad_dsn_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    message = error(write(tmp_path, "[[targets]]\ndsn = 'secret-pw-123 nonsense'\n"))
    assert "targets[0].dsn: invalid connection string" in message
    assert "secret-pw-123" not in message


def test_missing_file() -> None:
    assert "cannot read" in error(Path("/nonexistent/pgconn.toml"))


def test_redaction() -> None:
    assert "hunter2" not in cfg.redact("host=db password=hunter2 user=x")
    assert "hunter2" not in cfg.redact("postgresql://x:hunter2@db/app")
    assert cfg.redact("unparsable") == "<unparsable connection string>"


def test_environment_and_flags_override_the_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[agent]\ninterval = 5\nmax_groups = 40\n"
                           "[[targets]]\nname='a'\ndsn='host=x'\n")
    monkeypatch.setenv("PGCONN_AGENT_MAX_GROUPS", "60")
    monkeypatch.setenv("PGCONN_AGENT_DIMENSIONS", "application_name, state")
    c = cfg.load(path, {"interval": 2.0})
    assert (c.interval, c.max_groups, c.dimensions) == (2.0, 60, ("application_name", "state"))
    assert [t.interval for t in c.targets] == [2.0]
    monkeypatch.setenv("PGCONN_AGENT_MAX_GROUPS", "many")
    assert error(path) == "environment: PGCONN_AGENT_MAX_GROUPS: expected int, found 'many'"
    monkeypatch.delenv("PGCONN_AGENT_MAX_GROUPS")
    monkeypatch.setenv("PGCONN_AGENT_DSN", "host=z dbname=q")
    assert [t.name for t in cfg.load(path).targets] == ["z:5432/q"]


def test_password_from_file_and_systemd_credential(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o600)
    target = cfg.Target("a", "host=x user=u", password_file=tmp_path / "pw")
    assert "password=s3cret" in connection_string(target)
    assert "application_name=pgconn-agent" in connection_string(target)
    cred = cfg.Target("a", "host=x", password_credential="pgpassword")
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY"):
        connection_string(cred)
    (tmp_path / "pgpassword").write_text("fromsystemd")
    (tmp_path / "pgpassword").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert "password=fromsystemd" in connection_string(cred)
    missing = cfg.Target("a", "host=x", password_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match="cannot read password file"):
        connection_string(missing)
    (tmp_path / "pw").chmod(0o604)  # like libpq with .pgpass: refused, not used
    with pytest.raises(ConfigError, match="readable by every user"):
        connection_string(target)


def test_rules_command_prints_rules_and_rejects_bad_overrides() -> None:
    from click.testing import CliRunner

    from agent.cli import main

    ok = CliRunner().invoke(main, ["rules"])
    assert ok.exit_code == 0 and "groups:" in ok.output
    bad = CliRunner().invoke(main, ["rules", "--set", "no_such_threshold=1"])
    assert bad.exit_code == 2
    assert "no_such_threshold" in bad.output
