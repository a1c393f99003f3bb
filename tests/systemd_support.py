"""The shipped systemd unit read as systemd reads it, and ``systemd-analyze``: shared by the
tests of the hardened unit and of the application-host unit."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from agent_e2e import AGENT

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "pgconn-agent.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of the unit, every value of repeated keys kept in order."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze missing: run scripts/setup.sh (Debian package systemd)"
    return tool


def verifiable(unit: Path, directory: Path) -> Path:
    """A copy of ``unit`` in ``directory`` with only ExecStart's program replaced by the venv's
    agent: ``verify`` checks that the program exists, and /opt/pgconn-agent is where an install
    puts it, not where the tests run. Everything else is the shipped file, byte for byte."""
    text = unit.read_text(encoding="utf-8")
    program = shlex.split(unit_settings(text)["ExecStart"][0])[0]
    assert text.count(f"ExecStart={program} ") == 1
    copy = directory / unit.name
    copy.write_text(text.replace(f"ExecStart={program} ", f"ExecStart={AGENT} "),
                    encoding="utf-8")
    assert AGENT.exists()
    return copy
