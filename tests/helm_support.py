"""The official helm binary (installed by scripts/install-helm.sh) for the chart tests: private
helm homes, and the chart rendered by ``helm template`` into documents. The ``helm`` fixture
(tests/conftest.py) installs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "pgconn-agent"
HELM_ENV: dict[str, str] = {}
"""Private helm homes (``use_private_homes``), so the tests read no user's helm config."""


def install_helm() -> str:
    """The helm binary's path; fails (never skips) when it cannot be installed."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")],
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, f"installing helm failed:\n{result.stderr}"
    binary = result.stdout.strip().splitlines()[-1]
    assert os.access(binary, os.X_OK), binary
    return binary


def use_private_homes(directory: Path) -> None:
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        HELM_ENV[var] = str(directory / var.lower())


def run_helm(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, **HELM_ENV})


def template(helm: list[str], values: dict[str, Any], tmp_path: Path,
             chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    vfile = tmp_path / "values.yaml"
    vfile.write_text(yaml.safe_dump(values), encoding="utf-8")
    return run_helm([*helm, "template", "rel", str(chart), "--namespace", "db-monitoring",
                     "-f", str(vfile)])


def render(helm: list[str], values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    result = template(helm, values, tmp_path)
    assert result.returncode == 0, result.stderr
    (tmp_path / "rendered.yaml").write_text(result.stdout, encoding="utf-8")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
