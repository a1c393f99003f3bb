"""What the user tunes: thresholds (from ``agent.spec``) and the mixin-style settings.

Both ``pgconn-agent rules --set`` and the Python callers come through here, so a value is
checked once, with one-line errors that name the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import contract as c
from .. import spec
from ..errors import ConfigError
from ..spec import Threshold

RUNBOOK_BASE = "https://github.com/pgconn-agent/pgconn-agent/blob/main/docs/runbooks.md"

THRESHOLDS: tuple[Threshold, ...] = spec.ALERT_THRESHOLDS
DEFAULTS: dict[str, float] = {t.name: t.default for t in THRESHOLDS}
ORDERED_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (low, high) for low, high in spec.ORDERED if low in DEFAULTS and high in DEFAULTS)
"""Pairs (warning, critical): the first must stay below the second."""

_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_MATCHER = _LABEL + r'\s*(?:=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"'
SELECTOR_PATTERN = rf"^(?:\s*{_MATCHER}(?:\s*,\s*{_MATCHER})*\s*)?$"
"""A PromQL label-matcher list without braces (``job="pgconn-agent",env=~"prod.*"``)."""
LABEL_PATTERN = rf"^{_LABEL}$"
RESERVED_LABELS: frozenset[str] = frozenset(
    ("target", "pid", "error", "scope", "name", "le", "alertname", "severity",
     *c.GROUP_DIMENSIONS, "database", "user"))
"""Labels the alerts aggregate by themselves: not grouping labels."""
RUNBOOK_PATTERN = r"^https?://[^\s#]+$"
"""An http(s) URL without ``#`` (the alert's anchor is appended)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the rules look and how they group, like a monitoring mixin's ``_config``.

    ``selector`` is added to every metric the expressions read (e.g. ``job="pgconn-agent"``);
    ``group_by`` labels (e.g. ``cluster``, ``job``) go into every ``by``/``on`` next to
    ``target``, so two clusters scraped under one target name stay apart, and into the
    annotations' lookups; ``runbook_base`` is the URL of docs/runbooks.md.
    """

    selector: str = ""
    group_by: tuple[str, ...] = ()
    runbook_base: str = RUNBOOK_BASE

    def __post_init__(self) -> None:
        if not re.match(SELECTOR_PATTERN, self.selector):
            raise ConfigError(f"alert setting selector: expected label matchers such as "
                              f'job="pgconn-agent", found {self.selector!r}')
        for label in self.group_by:
            if not re.match(LABEL_PATTERN, label) or label in RESERVED_LABELS:
                raise ConfigError(f"alert setting group_by: expected label names the alerts do "
                                  f"not use themselves, found {label!r}")
        if len(set(self.group_by)) != len(self.group_by):
            raise ConfigError(f"alert setting group_by: repeated label in {self.group_by!r}")
        if not re.match(RUNBOOK_PATTERN, self.runbook_base):
            raise ConfigError(f"alert setting runbook_base: expected an http(s) URL without "
                              f"'#', found {self.runbook_base!r}")


DEFAULT_SETTINGS = Settings()
SETTING_NAMES: tuple[str, ...] = ("selector", "group_by", "runbook_base")


def number(value: float) -> str:
    """A threshold as the rules print it: whole numbers without ``.0``."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def duration(seconds: float) -> str:
    """A Prometheus duration string for a number of seconds (``300`` -> ``5m``)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out


def helm_settings() -> dict[str, Any]:
    """Defaults for ``.Values.alerts`` besides the thresholds (the ``Settings``)."""
    d = DEFAULT_SETTINGS
    return {"selector": d.selector, "groupBy": list(d.group_by), "runbookBase": d.runbook_base}


def helm_settings_schema() -> dict[str, Any]:
    """JSON-schema properties for those values: the checks ``Settings`` makes, for Helm."""
    return {
        "selector": {"type": "string", "pattern": SELECTOR_PATTERN,
                     "description": "PromQL label matchers added to every metric the rules read"},
        "groupBy": {"type": "array", "uniqueItems": True,
                    "items": {"type": "string", "pattern": LABEL_PATTERN,
                              "not": {"enum": sorted(RESERVED_LABELS)}},
                    "description": "Labels kept apart in every aggregation next to target"},
        "runbookBase": {"type": "string", "pattern": RUNBOOK_PATTERN,
                        "description": "Base URL of the runbooks"},
    }


def _check_range(t: Threshold, value: float) -> None:
    if t.unit == "ratio" and not 0 < value <= 1:
        raise ConfigError(f"alert threshold {t.name}: expected a ratio in (0, 1], "
                          f"found {number(value)}")
    if t.is_duration and value < 0:
        raise ConfigError(f"alert threshold {t.name}: expected a duration >= 0 seconds, "
                          f"found {number(value)}")
    if not t.is_duration and value <= 0:
        raise ConfigError(f"alert threshold {t.name}: expected a number > 0, "
                          f"found {number(value)}")


def _checked(name: str, value: float) -> float:
    """One override, known and sensible, as a float."""
    if name not in DEFAULTS:
        raise ConfigError(f"unknown alert threshold {name!r}; known: {', '.join(DEFAULTS)}, "
                          f"and the settings {', '.join(SETTING_NAMES)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"alert threshold {name}: expected a number, found {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"alert threshold {name}: expected a finite number, found {value!r}")
    _check_range(spec.ALERTS[name], value)
    return float(value)


def validate_overrides(overrides: Mapping[str, float]) -> dict[str, float]:
    """The effective thresholds; unknown names and senseless values are one-line errors."""
    out = dict(DEFAULTS)
    out.update({name: _checked(name, value) for name, value in overrides.items()})
    for low, high in ORDERED_PAIRS:
        if out[low] >= out[high]:
            name = low if low in overrides else high
            raise ConfigError(f"alert threshold {name}: {low} ({number(out[low])}) must be "
                              f"below {high} ({number(out[high])})")
    return out


def _setting(name: str, raw: str) -> str | tuple[str, ...]:
    if name == "group_by":
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    return raw.strip()


def _threshold(item: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"--set {item}: expected a number, found {raw.strip()!r}") from None


def parse_sets(items: Iterable[str]) -> tuple[dict[str, float], Settings]:
    """The CLI's ``--set NAME=VALUE`` list: threshold overrides and the settings.

    ``selector=job="pgconn-agent"``, ``group_by=cluster,job``, ``runbook_base=https://...``;
    every other name is a threshold and takes a number.
    """
    overrides: dict[str, float] = {}
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE")
        if name in SETTING_NAMES:
            settings[name] = _setting(name, raw)
        else:
            overrides[name] = _threshold(item, raw)
    validate_overrides(overrides)
    return overrides, Settings(**settings)


def changed(values: Mapping[str, float], settings: Settings) -> list[str]:
    """``name=value`` for every threshold and setting that differs from its default."""
    out = [f"{k}={number(v)}" for k, v in values.items() if v != DEFAULTS[k]]
    return out + [f"{k}={getattr(settings, k)!r}" for k in SETTING_NAMES
                  if getattr(settings, k) != getattr(DEFAULT_SETTINGS, k)]
