"""Numbers every CI log should show: what the slow tests cost and what they measured.

Tests record lines with the ``measure`` fixture (e.g. the image's size and build times); the
version matrix's cost is summed per server version from the test reports. Both are printed at
the end of the run, after pytest's summary.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

import pytest

_LINES = pytest.StashKey[list[str]]()
_VERSION_ID = re.compile(r"\[(?:.*-)?pg(\d+)(?:-.*)?\]$")
_seconds_by_version: dict[int, float] = defaultdict(float)


@pytest.fixture(scope="session")
def measure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record one line for the end-of-run summary."""
    return request.config.stash.setdefault(_LINES, []).append


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    match = _VERSION_ID.search(report.nodeid)
    if match:
        _seconds_by_version[int(match.group(1))] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    recorded: list[str] = config.stash.get(_LINES, [])
    lines = list(recorded)
    if _seconds_by_version:
        lines.append("version matrix, seconds per server version (setup + tests + teardown): "
                     + ", ".join(f"PostgreSQL {v}: {s:.1f}"
                                 for v, s in sorted(_seconds_by_version.items()))
                     + f"; {sum(_seconds_by_version.values()):.0f} s in all")
    if lines:
        terminalreporter.write_sep("-", "measurements")
        for line in lines:
            terminalreporter.write_line(line)
