"""Configuration: TOML file, ``PGCONN_AGENT_*`` environment and CLI flags into frozen dataclasses.

Unknown keys are rejected; every error names the file, the dotted key, and expected vs found.
Connection strings go through psycopg's conninfo helpers and are only ever shown redacted.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from psycopg import conninfo

from . import spec
from .contract import GROUP_DIMENSIONS
from .errors import ConfigError

T = TypeVar("T")

DEFAULT_LISTEN = "127.0.0.1:9188"
DEFAULT_LISTEN_ENV = "PGCONN_AGENT_DEFAULT_LISTEN"
"""Replaces DEFAULT_LISTEN only where nothing else sets ``listen``: the container image sets it
to 0.0.0.0:9188 without overriding a mounted config file (``PGCONN_AGENT_LISTEN`` would)."""
MAX_INTERVAL = 86400.0
"""Longest poll or export interval accepted (seconds); beyond it the scheduler's arithmetic
overflows long before it would make sense."""
LIBPQ_TARGET_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
"""libpq variables that name a server: any of them alone makes a target (as for psql)."""
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    dsn: str
    password_file: Path | None = None
    password_credential: str | None = None
    interval: float = 15.0
    server: str | None = None
    """Names the PostgreSQL server when host:port does not (targets sharing one poll)."""

    @property
    def redacted_dsn(self) -> str:
        return redact(self.dsn)


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """OTLP export; anything left ``None`` falls back to the standard ``OTEL_*`` variables."""

    enabled: bool | None = None
    endpoint: str | None = None
    protocol: str | None = None
    headers: Mapping[str, str] | None = None
    certificate: Path | None = None
    insecure: bool | None = None
    export_interval: float | None = None


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Thresholds(Mapping[spec.Threshold, float]):
    """Where diagnosis findings start: every ``spec.DIAGNOSE_THRESHOLDS`` at its default unless
    ``values`` (the ``[thresholds]`` table) says otherwise. Rules read ``t[spec.IDLE_HOARD_AGE]``,
    so a threshold declared in the spec needs no field here."""

    _values: Mapping[spec.Threshold, float]

    def __init__(self, values: Mapping[spec.Threshold, float] | None = None) -> None:
        given = dict(values or {})
        unknown = [t.name for t in given if t not in spec.DIAGNOSE_THRESHOLDS]
        if unknown:
            raise ValueError(f"not a [thresholds] key of the spec: {', '.join(unknown)}")
        object.__setattr__(self, "_values", MappingProxyType(
            {t: given.get(t, t.default) for t in spec.DIAGNOSE_THRESHOLDS}))

    def __getitem__(self, threshold: spec.Threshold) -> float:
        return self._values[threshold]

    def __iter__(self) -> Iterator[spec.Threshold]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Thresholds({', '.join(f'{t.name}={v!r}' for t, v in self._values.items())})"


@dataclass(frozen=True, slots=True)
class Config:
    targets: tuple[Target, ...]
    interval: float = 15.0
    max_groups: int = 200
    dimensions: tuple[str, ...] = GROUP_DIMENSIONS
    show_queries: bool = False
    client_processes: bool = True
    """Name the local processes holding connections (read from /proc where readable)."""
    listen: str | None = DEFAULT_LISTEN
    log_format: str = "text"
    log_level: str = "info"
    web_config_file: Path | None = None
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    source: str = "<defaults>"
    targets_dir: Path | None = None
    shard: tuple[int, int] | None = None
    """(index, count): this agent polls the servers whose rendezvous hash picks ``index``."""
    rejected: tuple[str, ...] = ()
    """One error per file of ``targets_dir`` that was left out."""


def redact(dsn: str) -> str:
    """The DSN with any password removed; an unparsable DSN is never echoed."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable connection string>"
    params.pop("password", None)
    return conninfo.make_conninfo("", **params)


def default_target_name(dsn: str) -> str:
    """``host:port/dbname`` from a DSN, libpq's defaults filled in where the DSN is silent."""
    params = conninfo.conninfo_to_dict(dsn)
    host = str(params.get("host") or os.environ.get("PGHOST") or "local").split(",")[0]
    if host.startswith("/"):
        host = "local"
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432").split(",")[0]
    db = str(params.get("dbname") or os.environ.get("PGDATABASE") or "postgres")
    return f"{host}:{port}/{db}"


class _Reader:
    """Typed access to one TOML table that remembers its dotted path and the keys used."""

    def __init__(self, source: str, path: str, table: Mapping[str, Any]) -> None:
        self.source, self.path, self.table = source, path, table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> ConfigError:
        return _error(self.source, message, self.key(name))

    def get(self, name: str, kind: type[T], default: T, *, secret: bool = False) -> T:
        """The value of ``name``; ``secret`` values (DSNs) are never echoed in errors."""
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            shown = "" if secret else f" {_shown(value)}"
            raise self.fail(name, f"expected {kind.__name__}, found {type(value).__name__}"
                                  f"{shown}")
        return value

    def positive(self, name: str, default: float, maximum: float = math.inf) -> float:
        value = self.get(name, float, default)
        if not value > 0:
            raise self.fail(name, f"expected a number > 0, found {value!r}")
        if not (math.isfinite(value) and value <= maximum):
            bound = f"<= {maximum:g}" if math.isfinite(maximum) else "finite"
            raise self.fail(name, f"expected a number {bound}, found {value!r}")
        return value

    def table_of(self, name: str) -> _Reader:
        return _Reader(self.source, self.key(name), self.get(name, dict, {}))

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _error(source: str, message: str, key: str | None = None) -> ConfigError:
    """A one-line error naming the file (or source) and the dotted key."""
    where = f"{_printable(source)}: {_printable(key)}" if key else _printable(source)
    return ConfigError(f"{where}: {message}")


def _printable(text: str) -> str:
    """``text`` with control characters escaped, so an error message stays on one line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse(data: Mapping[str, Any], source: str) -> Config:
    """Build a Config from a TOML document; raises ConfigError naming the offending key."""
    root = _Reader(source, "", data)
    agent = root.table_of("agent")
    interval = agent.positive("interval", 15.0, MAX_INTERVAL)
    max_groups = agent.get("max_groups", int, 200)
    if max_groups < 2:
        raise agent.fail("max_groups", f"expected an integer >= 2, found {max_groups}")
    dims = agent.get("dimensions", list, list(GROUP_DIMENSIONS))
    for dim in dims:
        if dim not in GROUP_DIMENSIONS:
            raise agent.fail("dimensions", f"expected names from {', '.join(GROUP_DIMENSIONS)}, "
                                           f"found {_shown(dim)}")
    log_format = agent.get("log_format", str, "text")
    if log_format not in ("text", "json"):
        raise agent.fail("log_format", f"expected 'text' or 'json', found {log_format!r}")
    log_level = agent.get("log_level", str, "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise agent.fail("log_level",
                         f"expected debug, info, warning or error, found {log_level!r}")
    show_queries = agent.get("show_queries", bool, False)
    client_processes = agent.get("client_processes", bool, True)
    listen = agent.get("listen", str, _default_listen())
    if listen:
        _check_listen(agent, listen)
    web_config_file = agent.get("web_config_file", str, "")
    if web_config_file:
        _check_web_config(agent, web_config_file)
    targets_dir = agent.get("targets_dir", str, "")
    shard = _parse_shard(agent, agent.get("shard", str, ""))
    agent.finish()

    otlp = _parse_otlp(root.table_of("otlp"))
    thresholds = _parse_thresholds(root.table_of("thresholds"))
    raw_targets = root.get("targets", list, [])
    root.finish()
    targets = _targets(source, raw_targets, interval)
    return Config(targets=targets, interval=interval, max_groups=max_groups,
                  dimensions=tuple(d for d in GROUP_DIMENSIONS if d in dims),
                  show_queries=show_queries, client_processes=client_processes,
                  listen=listen or None, log_format=log_format,
                  log_level=log_level, otlp=otlp, thresholds=thresholds, source=source,
                  web_config_file=Path(web_config_file) if web_config_file else None,
                  targets_dir=_relative_to(source, targets_dir) if targets_dir else None,
                  shard=shard)


_SHARD = re.compile(r"^(?:.*-)?(\d+)/(\d+)$")


def _parse_shard(reader: _Reader, text: str) -> tuple[int, int] | None:
    """``I/N``; I may be a StatefulSet pod name (``name-I``), so the pod's name is enough."""
    if not text:
        return None
    match = _SHARD.fullmatch(text)
    if not match or not int(match[1]) < int(match[2]):
        raise reader.fail("shard", f"expected I/N with 0 <= I < N, found {_shown(text)}")
    return int(match[1]), int(match[2])


def _relative_to(source: str, directory: str) -> Path:
    """A relative ``targets_dir`` is relative to the config file's directory."""
    base = Path(source).parent if Path(source).is_file() else Path.cwd()
    return base / directory


def _targets(source: str, raw: list[Any], interval: float) -> tuple[Target, ...]:
    targets = tuple(_parse_target(_Reader(source, f"targets[{i}]", _as_table(source, i, t)),
                                  interval)
                    for i, t in enumerate(raw))
    _check_unique(source, targets)
    return targets


def parse_target_file(path: Path, interval: float) -> tuple[Target, ...]:
    """The ``[[targets]]`` of one file of ``targets_dir`` (no other key is allowed there)."""
    root = _Reader(str(path), "", read_toml(path))
    raw = root.get("targets", list, [])
    root.finish()
    return _targets(str(path), raw, interval)


def _as_table(source: str, index: int, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _error(source, f"expected a table, found {type(value).__name__}",
                     f"targets[{index}]")
    return value


def _check_listen(reader: _Reader, listen: str) -> None:
    if not _is_host_port(listen):
        raise reader.fail("listen", f"expected HOST:PORT, found {listen!r}")


def _is_host_port(listen: str) -> bool:
    _, sep, port = listen.rpartition(":")
    return bool(sep) and port.isdigit() and 0 <= int(port) <= 65535


def _default_listen() -> str:
    value = os.environ.get(DEFAULT_LISTEN_ENV) or DEFAULT_LISTEN
    if not _is_host_port(value):
        raise ConfigError(f"environment: {DEFAULT_LISTEN_ENV}: expected HOST:PORT, "
                          f"found {value!r}")
    return value


def _check_web_config(reader: _Reader, path: str) -> None:
    from . import webconfig

    try:
        webconfig.load(Path(path))
    except ConfigError as exc:
        raise reader.fail("web_config_file", str(exc)) from None


def _check_unique(source: str, targets: tuple[Target, ...]) -> None:
    seen: set[str] = set()
    for i, target in enumerate(targets):
        if target.name in seen:
            raise _error(source, f"duplicate target name {target.name!r}", f"targets[{i}].name")
        seen.add(target.name)


def _parse_target(reader: _Reader, interval: float) -> Target:
    if "dsn" not in reader.table:
        raise reader.fail("dsn", 'missing: every target needs a libpq connection string or URI '
                                 '(dsn = "" takes everything from the PG* variables)')
    dsn = reader.get("dsn", str, "", secret=True)
    check_dsn(dsn, reader.key("dsn"), reader.source)
    name = reader.get("name", str, "") or default_target_name(dsn)
    if not _TARGET_NAME.fullmatch(name):
        raise reader.fail("name", f"expected 1-64 characters from A-Z a-z 0-9 _ . : @ / -, "
                                  f"found {_shown(name)}")
    pw_file = reader.get("password_file", str, "")
    credential = reader.get("password_credential", str, "")
    if credential and ("/" in credential or credential in (".", "..")):
        raise reader.fail("password_credential", f"expected a credential name, found "
                                                 f"{credential!r}")
    target = Target(name=name, dsn=dsn, password_file=Path(pw_file) if pw_file else None,
                    password_credential=credential or None,
                    interval=reader.positive("interval", interval, MAX_INTERVAL),
                    server=reader.get("server", str, "") or None)
    reader.finish()
    return target


def check_dsn(dsn: str, key: str, source: str) -> None:
    """Reject a DSN libpq cannot parse, without echoing it (it may hold a password)."""
    try:
        conninfo.conninfo_to_dict(dsn)
    except Exception:
        raise _error(source, "invalid connection string (not a libpq keyword=value string or "
                             "postgresql:// URI)", key) from None


def _parse_otlp(reader: _Reader) -> OtlpConfig:
    enabled = reader.get("enabled", bool, None)
    endpoint = reader.get("endpoint", str, None)
    protocol = reader.get("protocol", str, None)
    if protocol is not None and protocol not in ("grpc", "http/protobuf"):
        raise reader.fail("protocol", f"expected 'grpc' or 'http/protobuf', found {protocol!r}")
    headers = reader.get("headers", dict, None)
    if headers is not None:
        for key, value in headers.items():
            if not isinstance(value, str):
                raise reader.fail(f"headers.{key}", f"expected str, found {type(value).__name__}")
    cert = reader.get("certificate", str, None)
    insecure = reader.get("insecure", bool, None)
    export_interval = (reader.positive("export_interval", 0.0, MAX_INTERVAL)
                       if "export_interval" in reader.table else None)
    reader.finish()
    return OtlpConfig(enabled=enabled, endpoint=endpoint, protocol=protocol, headers=headers,
                      certificate=Path(cert) if cert else None, insecure=insecure,
                      export_interval=export_interval)


def _parse_thresholds(reader: _Reader) -> Thresholds:
    values = {t: _threshold(reader, t) for t in spec.DIAGNOSE_THRESHOLDS}
    by_name = {t.name: v for t, v in values.items()}
    for low, high in ((lo, hi) for lo, hi in spec.ORDERED if lo in by_name and hi in by_name):
        if not by_name[low] < by_name[high]:
            raise reader.fail(low, f"expected less than {high} ({by_name[high]!r}), "
                                   f"found {by_name[low]!r}")
    reader.finish()
    return Thresholds(values)


def _threshold(reader: _Reader, t: spec.Threshold) -> float:
    """One ``[thresholds]`` key, checked as its spec says: counts are integers >= 1, ratios
    in (0, 1], everything else a finite number > 0."""
    if t.is_count:
        count = reader.get(t.name, int, int(t.default))
        if count < 1:
            raise reader.fail(t.name, f"expected an integer >= 1, found {count}")
        return count
    value = reader.positive(t.name, t.default)
    if t.is_ratio and value > 1:
        raise reader.fail(t.name, f"expected a ratio in (0, 1], found {value!r}")
    return value


def load(path: Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read a config file (or none) and apply environment and CLI overrides, in that order.

    ``overrides`` keys mirror the ``[agent]`` table, plus ``dsns`` (a list of DSNs that replace
    the file's targets).
    """
    data: dict[str, Any] = {}
    source = "<command line>"
    if path is not None:
        source = str(path)
        data = read_toml(path)
    merged = {**_env_overrides(), **(overrides or {})}
    dsns = merged.pop("dsns", None)
    if path is None and not dsns and any(os.environ.get(v) for v in LIBPQ_TARGET_VARS):
        dsns = [""]  # libpq's environment alone names the server, as it does for psql
    if merged:
        agent = dict(data.get("agent", {})) if isinstance(data.get("agent", {}), dict) else {}
        agent.update(merged)
        data = {**data, "agent": agent}
    config = parse(data, source)
    if dsns:
        targets = []
        for i, dsn in enumerate(dsns):
            check_dsn(dsn, f"--dsn[{i}]", "<command line>")
            targets.append(Target(name=default_target_name(dsn), dsn=dsn,
                                  interval=config.interval))
        _check_unique("<command line>", tuple(targets))
        config = replace(config, targets=tuple(targets))
    if config.targets_dir is not None:
        from .targets_dir import read_targets

        found, rejected = read_targets(config.targets_dir, config.targets, config.interval)
        config = replace(config, targets=found, rejected=rejected)
    return config


def read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _error(source, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise _error(source, f"not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise _error(source, f"invalid TOML: {_printable(str(exc))}") from None
    except RecursionError:
        raise _error(source, "invalid TOML: nested too deeply") from None


_ENV = {
    "PGCONN_AGENT_INTERVAL": ("interval", float),
    "PGCONN_AGENT_MAX_GROUPS": ("max_groups", int),
    "PGCONN_AGENT_LISTEN": ("listen", str),
    "PGCONN_AGENT_LOG_FORMAT": ("log_format", str),
    "PGCONN_AGENT_LOG_LEVEL": ("log_level", str),
    "PGCONN_AGENT_WEB_CONFIG_FILE": ("web_config_file", str),
    "PGCONN_AGENT_DIMENSIONS": ("dimensions", list),
    "PGCONN_AGENT_DSN": ("dsns", list),
    "PGCONN_AGENT_CLIENT_PROCESSES": ("client_processes", bool),
    "PGCONN_AGENT_TARGETS_DIR": ("targets_dir", str),
    "PGCONN_AGENT_SHARD": ("shard", str),
}
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}


def _env_overrides() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, (key, kind) in _ENV.items():
        raw = os.environ.get(var)
        if raw is None or raw == "":
            continue
        if kind is list:
            out[key] = [raw] if key == "dsns" else [p.strip() for p in raw.split(",") if p.strip()]
            continue
        if kind is bool:
            if raw.lower() not in _BOOLEANS:
                raise ConfigError(f"environment: {var}: expected true or false, found {raw!r}")
            out[key] = _BOOLEANS[raw.lower()]
            continue
        try:
            out[key] = kind(raw)
        except ValueError:
            raise ConfigError(f"environment: {var}: expected {kind.__name__}, found {raw!r}") \
                from None
    return out


def read_password(target: Target) -> str | None:
    """The target's password from its file or systemd credential, if it has one."""
    if target.password_credential:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(f"target {target.name}: password_credential is set but "
                              f"$CREDENTIALS_DIRECTORY is not (use systemd's LoadCredential=)")
        return _read_secret(Path(directory) / target.password_credential, target.name)
    if target.password_file:
        return _read_secret(target.password_file, target.name)
    return None


def _read_secret(path: Path, name: str) -> str:
    """The file's first line; like libpq with a world-readable .pgpass, a file anyone on the
    host can read is refused (group access stays allowed: Kubernetes mounts Secrets 0440 with
    the pod's fsGroup)."""
    try:
        with path.open(encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o004:
                raise ConfigError(f"target {name}: password file {path} is readable by every "
                                  f"user (mode {mode & 0o777:04o}): chmod o-rwx it")
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"target {name}: cannot read password file {path}: "
                          f"{exc.strerror or exc}") from None


def check_secrets(config: Config) -> list[str]:
    """Read every target's password now, so bad input fails before any connection.

    Raises ConfigError for a missing, unreadable or world-readable password file; returns notes
    for credentials that only exist under systemd (``$CREDENTIALS_DIRECTORY`` unset).
    """
    notes = []
    for target in config.targets:
        if target.password_credential and not os.environ.get("CREDENTIALS_DIRECTORY"):
            notes.append(f"target {target.name}: password_credential "
                         f"{target.password_credential!r} is read from $CREDENTIALS_DIRECTORY, "
                         f"which only systemd's LoadCredential= sets")
            continue
        try:
            read_password(target)
        except ConfigError as exc:
            raise _error(config.source, str(exc)) from None
    return notes
