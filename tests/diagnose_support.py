"""``pgconn-agent diagnose`` run in-process for tests: its exit status, text or JSON reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from agent.cli import main


def run_diagnose(*args: str, config: Path | None = None, window: float | None = None
                 ) -> tuple[int, str]:
    """Exit status and output of ``pgconn-agent diagnose ARGS [--config CONFIG]``; ``window``
    (seconds, 0 for one instant) replaces the default observation window."""
    argv = ["diagnose", *args]
    if window is not None:
        argv += ["--window", f"{window:g}"]
    if config is not None:
        argv += ["--config", str(config)]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    return result.exit_code, result.output


def diagnose_reports(*dsns: str, config: Path | None = None, window: float | None = None
                     ) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit status and the JSON report of each target, by target name."""
    code, out = run_diagnose("--format", "json", *(a for d in dsns for a in ("--dsn", d)),
                             config=config, window=window)
    return code, {t["target"]: t for t in json.loads(out)["targets"]}


def diagnose_report(dsn: str, config: Path | None = None, window: float | None = None
                    ) -> tuple[int, dict[str, Any]]:
    """Exit status and the JSON report of the one target ``dsn``."""
    code, reports = diagnose_reports(dsn, config=config, window=window)
    (report,) = reports.values()
    return code, report


def codes(report: dict[str, Any]) -> dict[str, str]:
    """Finding code -> severity of one JSON report."""
    return {f["code"]: f["severity"] for f in report["findings"]}
