"""Package metadata: one version, the license it names shipped, URLs and classifiers that exist."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import trove_classifiers
import yaml

import agent
from agent.collect.part import discover

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_version_is_written_once() -> None:
    assert "version" not in PYPROJECT and "version" in PYPROJECT["dynamic"]
    assert metadata.version("pgconn-agent") == agent.__version__
    chart = yaml.safe_load((ROOT / "helm/pgconn-agent/Chart.yaml").read_text())
    assert chart["appVersion"] == agent.__version__, "Helm's appVersion must follow the package"


def test_the_license_file_is_the_license_the_metadata_names() -> None:
    assert PYPROJECT["license"] == "Apache-2.0"
    assert PYPROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    installed = metadata.metadata("pgconn-agent")
    assert installed["License-Expression"] == "Apache-2.0"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in dockerfile


def test_urls_and_classifiers() -> None:
    urls = PYPROJECT["urls"]
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls)
    assert all(u.startswith(urls["Source"]) for u in urls.values())
    label = re.search(r'org\.opencontainers\.image\.source="([^"]+)"',
                      (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert label is not None and label.group(1) == urls["Source"]
    classifiers = PYPROJECT["classifiers"]
    unknown = set(classifiers) - trove_classifiers.classifiers
    assert not unknown, unknown
    # PEP 639: the license expression replaces license classifiers.
    assert not [c for c in classifiers if c.startswith("License ::")]
    python = re.fullmatch(r">=3\.(\d+)", PYPROJECT["requires-python"])
    assert python is not None
    assert f"Programming Language :: Python :: 3.{python.group(1)}" in classifiers


def test_the_package_data_ships_every_parts_sql() -> None:
    """The wheel carries what ``package-data`` names: every part folder's SQL must match it."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    shipped = {p for pattern in tool["setuptools"]["package-data"]["agent"]
               for p in (ROOT / "agent").glob(pattern)}
    sql = set((ROOT / "agent").rglob("*.sql"))
    assert sql and sql <= shipped, sorted(map(str, sql - shipped))
    assert {p.parent.name for p in sql} == {part.name for part in discover()}
