"""One drift test for every generated file: ``scripts/generate.py --check`` finds none stale
(docs, alert rules and their README tables, dashboards, the Helm chart's copies)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_generated_file_is_what_its_source_gives() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
