"""Normalise ``pg_settings`` values: durations to seconds, everything else as a plain number."""

from __future__ import annotations

from .snapshot import Setting

_SECONDS_PER_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


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
