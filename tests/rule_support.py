"""Helpers shared by the alert-rule and Helm tests: rule groups compared modulo ``for:``
spelling, and the official helm binary installed by scripts/install-helm.sh."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
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


def install_helm() -> str:
    """The helm binary's path; fails (never skips) when it cannot be installed."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")],
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, f"installing helm failed:\n{result.stderr}"
    binary = result.stdout.strip().splitlines()[-1]
    assert os.access(binary, os.X_OK), binary
    return binary
