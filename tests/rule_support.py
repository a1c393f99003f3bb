"""Rule groups compared modulo ``for:`` spelling, shared by the alert-rule and Helm tests."""

from __future__ import annotations

import json
import re
from typing import Any

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration in seconds; anything but a whole duration fails the test."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * _UNITS[u] for n, u in parts)


def normalized(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of rule groups with every ``for:`` in seconds (Helm writes 300s where the file
    says 5m)."""
    out: list[dict[str, Any]] = json.loads(json.dumps(groups))
    for group in out:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = seconds(rule["for"])
    return out
