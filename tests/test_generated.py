"""One drift test for every generated file: ``scripts/generate.py --check`` finds none stale
(docs, alert rules and their README tables, dashboards, the Helm chart's copies)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_generated_file_is_what_its_source_gives() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_the_check_names_a_stale_file_and_writing_mends_it(tmp_path: Path) -> None:
    """On a copy of the sources: a hand-edited generated file fails ``--check`` by name, and
    ``generate.py`` without it rewrites the file so the check passes again."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".tools", ".mypy_cache", ".ruff_cache", ".hypothesis", "node_modules",
        "*.egg-info", "results"))
    edited = copy / "docs" / "metrics.md"
    edited.write_text(edited.read_text("utf-8") + "hand edit\n", "utf-8")

    def generate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(copy / "scripts" / "generate.py"), *args],
                              capture_output=True, text=True, timeout=120, check=False)

    checked = generate("--check")
    assert checked.returncode == 1 and "stale: docs/metrics.md" in checked.stderr, checked
    assert "hand edit" in edited.read_text("utf-8")  # --check writes nothing
    assert generate().returncode == 0
    assert generate("--check").returncode == 0
    assert edited.read_text("utf-8") == (ROOT / "docs" / "metrics.md").read_text("utf-8")
