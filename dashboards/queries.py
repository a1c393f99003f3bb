"""Every panel query of a dashboard JSON, with Grafana's variable interpolation applied.

The end-to-end tests run these against a real Prometheus. Interpolation follows Grafana's
Prometheus data source: a multi-value or include-all variable is regex-escaped (it appears in
``=~`` matchers), several values become ``(a|b)``, "All" becomes the variable's ``allValue``;
a single-value variable is inserted as is. ``$__rate_interval`` and friends take the values
given (Grafana derives them from the scrape interval and the time range).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

Value = str | Sequence[str]

_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::(?P<fmt>\w+))?\}|\[\[(?P<old>\w+)\]\]|\$(?P<plain>\w+)"
)
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|{}\[\]]")
ALL = "$__all"


def builtin_intervals(*, rate_interval: str = "1m", interval: str = "15s",
                      range_: str = "5m") -> dict[str, str]:
    """Grafana's built-in time variables for PromQL, from the three durations given."""
    seconds = _seconds(range_)
    interval_s = _seconds(interval)
    return {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__interval_ms": str(int(interval_s * 1000)),
        "__range": range_,
        "__range_s": str(int(seconds)),
        "__range_ms": str(int(seconds * 1000)),
    }


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def _regex_escape(value: str) -> str:
    # Grafana's prometheusSpecialRegexEscape: a backslash for the regex, doubled for the string.
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value)


def _plain_escape(value: str) -> str:
    # Grafana's prometheusRegularEscape.
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def _variables(dashboard: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def _interpolate(expr: str, declared: Mapping[str, Mapping[str, Any]],
                 values: Mapping[str, Value], builtins: Mapping[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("old") or m.group("plain")
        if name in builtins:
            return builtins[name]
        if name.isdigit():  # a regex back-reference such as label_replace's "$1"; Grafana too
            return m.group(0)
        if name not in declared:
            raise KeyError(f"query uses ${name}, which the dashboard does not declare")
        var = declared[name]
        multi = bool(var.get("multi") or var.get("includeAll"))
        value = values.get(name, ALL if var.get("includeAll") else None)
        if value is None:
            raise KeyError(f"no value given for variable ${name}")
        items = [value] if isinstance(value, str) else list(value)
        if items == [ALL] or (len(items) == 1 and items[0] == "All" and var.get("includeAll")):
            all_value = var.get("allValue")
            if all_value:
                return str(all_value)
            items = [o["value"] for o in var.get("options", []) if o.get("value") != ALL]
        if var.get("type") == "datasource":
            return items[0]
        if not multi:
            return _plain_escape(items[0])
        escaped = [_regex_escape(v) for v in items]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return _VARIABLE.sub(replace, expr)


def _panels(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def panel_queries(dashboard: Mapping[str, Any], variables: Mapping[str, Value], *,
                  rate_interval: str = "1m", interval: str = "15s", range_: str = "5m"
                  ) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every visible query of every panel, variables substituted.

    ``variables`` maps a dashboard variable's name (without ``$``) to a value or a list of
    values; a missing include-all variable means "All". Row panels' nested panels count;
    hidden queries (``"hide": true``) do not. Raises ``KeyError`` for a variable that the
    dashboard does not declare or that has no value.
    """
    declared = _variables(dashboard)
    builtins = builtin_intervals(rate_interval=rate_interval, interval=interval, range_=range_)
    out: list[tuple[str, str]] = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr or target.get("hide"):
                continue
            out.append((str(panel.get("title", "")),
                        _interpolate(str(expr), declared, variables, builtins)))
    return out
