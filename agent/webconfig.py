"""TLS and basic authentication of the HTTP endpoint, from a Prometheus exporter-toolkit web
config file (``--web.config.file``), so the agent is secured the way every exporter is.

Supported: ``tls_server_config`` (cert_file, key_file, client_auth_type, client_ca_file,
min_version, max_version) and ``basic_auth_users`` (user: bcrypt hash). Like exporter-toolkit,
unknown keys are rejected and, when users are set, every path (``/healthz`` too) needs them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from .errors import ConfigError

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
"""exporter-toolkit's RequestClientCert and RequireAnyClientCert accept unverified certificates,
which Python's ssl module cannot do: they are rejected rather than silently weakened."""
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version")
_UNKNOWN_USER_HASH = b"$2b$10$/r//ZSdLoK70bRGqSdZ5mOO8hAG8RaaOrmL0.5g8t1O3iL7jN5uQy"
"""bcrypt (cost 10) of a fixed string, checked for unknown users too so that response time
does not reveal which users exist."""


@dataclass(frozen=True)
class WebConfig:
    """What the listener needs: a server TLS context and the users' bcrypt hashes."""

    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)


def load(path: Path) -> WebConfig:
    """Parse and check a web config file; every error is one line naming the file and key."""
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{source}: invalid YAML: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, found {type(data).__name__}")
    unknown = sorted(set(data) - {"tls_server_config", "basic_auth_users"})
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key")
    tls = _table(source, "tls_server_config", data.get("tls_server_config"))
    users = _table(source, "basic_auth_users", data.get("basic_auth_users"))
    return WebConfig(ssl_context=_ssl_context(source, tls) if tls else None,
                     users=_users(source, users))


def _table(source: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping, found {type(value).__name__}")
    return value


def _ssl_context(source: str, tls: dict[str, Any]) -> ssl.SSLContext:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: tls_server_config.{key}: {message}")

    unknown = sorted(set(tls) - set(_TLS_KEYS))
    if unknown:
        raise fail(unknown[0], "unknown key")
    for key in _TLS_KEYS:
        if key in tls and not isinstance(tls[key], str):
            raise fail(key, f"expected a string, found {type(tls[key]).__name__}")
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            raise fail(key, "missing (TLS needs both cert_file and key_file)")
    auth = tls.get("client_auth_type") or "NoClientCert"
    if auth not in _CLIENT_AUTH:
        raise fail("client_auth_type", f"expected one of {', '.join(_CLIENT_AUTH)}, "
                                       f"found {auth!r}")
    ca = tls.get("client_ca_file")
    if _CLIENT_AUTH[auth] != ssl.CERT_NONE and not ca:
        raise fail("client_ca_file", f"missing (client_auth_type {auth} verifies client "
                                     f"certificates against it)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key, attribute, default in (("min_version", "minimum_version", "TLS12"),
                                    ("max_version", "maximum_version", "TLS13")):
        name = tls.get(key) or default
        if name not in _VERSIONS:
            raise fail(key, f"expected one of {', '.join(_VERSIONS)}, found {name!r}")
        setattr(ctx, attribute, _VERSIONS[name])
    try:
        ctx.load_cert_chain(tls["cert_file"], tls["key_file"])
    except OSError as exc:
        raise fail("cert_file", f"cannot load {tls['cert_file']} / {tls['key_file']}: "
                                f"{exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise fail("cert_file", f"cannot load {tls['cert_file']} / {tls['key_file']}: "
                                f"{exc.reason or exc}") from None
    if ca:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise fail("client_ca_file", f"cannot load {ca}: "
                                         f"{getattr(exc, 'strerror', None) or exc}") from None
    ctx.verify_mode = _CLIENT_AUTH[auth]
    return ctx


def _users(source: str, users: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for user, hashed in users.items():
        key = f"basic_auth_users.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(f"{source}: {key}: expected a user name without ':'")
        if not isinstance(hashed, str) or not _is_bcrypt(hashed.encode()):
            # The value is a secret's hash: never echoed.
            raise ConfigError(f"{source}: {key}: expected a bcrypt hash ($2y$...; "
                              f"htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        out[user] = hashed.encode()
    return out


def _is_bcrypt(hashed: bytes) -> bool:
    try:
        bcrypt.checkpw(b"", hashed)
    except ValueError:
        return False
    return True


class Authenticator:
    """Checks ``Authorization: Basic`` headers against the users' bcrypt hashes.

    bcrypt is slow on purpose (tens of ms at cost 10); like exporter-toolkit, outcomes are
    cached per (user, hash, password digest) and checks run one at a time, so a scraper costs
    one bcrypt per password and a flood of guesses cannot take every worker.
    """

    CACHE_SIZE = 100

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()

    def allows(self, header: str | None) -> bool:
        user, password = _credentials(header)
        if user is None or password is None:
            return False
        known = user in self.users
        hashed = self.users.get(user, _UNKNOWN_USER_HASH)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, password))).digest()
        with self._lock:
            ok = self._cache.get(key)
            if ok is None:
                try:
                    ok = bcrypt.checkpw(password, hashed)
                except ValueError:  # bcrypt 5 refuses passwords over 72 bytes
                    ok = False
                self._cache[key] = ok
                if len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)
        return known and ok


def _credentials(header: str | None) -> tuple[str | None, bytes | None]:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None, None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None, None
    return user.decode("utf-8", "replace"), password
