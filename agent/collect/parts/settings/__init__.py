"""Connection-relevant ``pg_settings``, durations normalised to seconds; read again only after a
configuration reload."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .... import contract as c
from ...part import Part, Point


@dataclass(frozen=True, slots=True)
class Setting:
    """A connection-relevant setting; durations are normalised to seconds, 0 means disabled."""

    name: str
    value: float
    unit: str


SETTING_SINCE: dict[str, int] = {
    "max_connections": 120000,
    "superuser_reserved_connections": 120000,
    "reserved_connections": 160000,
    "idle_in_transaction_session_timeout": 120000,
    "idle_session_timeout": 140000,
    "statement_timeout": 120000,
    "lock_timeout": 120000,
    "deadlock_timeout": 120000,
    "tcp_keepalives_idle": 120000,
    "client_connection_check_interval": 140000,
    "authentication_timeout": 120000,
    "transaction_timeout": 170000,
}
"""Connection-relevant settings and the server version that introduced each."""

_SECONDS_PER_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def setting_names(server_version_num: int) -> list[str]:
    return [name for name, since in SETTING_SINCE.items() if since <= server_version_num]


def normalise(name: str, setting: str, unit: str) -> Setting:
    """A setting as a number; duration units become seconds (``unit`` is then ``"s"``).

    ``unit`` is ``pg_settings.unit``, which may carry a multiplier such as ``"8kB"`` or ``"10ms"``
    for some settings; only the plain duration units above matter for connection settings.
    """
    value = float(setting)
    digits = unit.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    base = unit[len(digits):]
    if base in _SECONDS_PER_UNIT:
        factor = float(digits) if digits else 1.0
        return Setting(name, value * factor * _SECONDS_PER_UNIT[base], "s")
    return Setting(name, value, unit)


def _params(server_version_num: int) -> Mapping[str, Any]:
    return {"setting_names": setting_names(server_version_num)}


def _points(rows: tuple[Setting, ...]) -> Iterable[Point]:
    for setting in rows:
        yield c.SETTING, (("name", setting.name),), setting.value


PART = Part("settings", Setting, normalise, _params, _points, cached=True)
