"""Package metadata (one version, the license it names shipped, URLs and classifiers that
exist) and the wheel's contents: what the commands run, and no test harness. Builds the wheel
with pip (5-15 s).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import trove_classifiers
import yaml

import agent
from agent.collect import catch
from agent.collect.part import discover

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
ENTRY_MODULES = ("agent.cli", "agent.__main__", "agent.docs")
"""What runs: the console script, ``python -m agent``, and the docs generator that
scripts/generate.py runs (it writes from the package's own declarations)."""


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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from what the Dockerfile copies, unpacked (built in a copy: an
    in-tree build would leave build/ behind, stale files included)."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    shutil.copytree(ROOT / "agent", source / "agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(source)], check=True, capture_output=True)
    with zipfile.ZipFile(next(out.glob("*.whl"))) as built:
        built.extractall(out / "unpacked")
    return out / "unpacked"


def _module(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, path: Path) -> set[str]:
    """Every ``agent`` module ``path`` imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            name = ((f"{base}.{node.module}" if node.module else base) if node.level
                    else node.module or "")
            found |= {name, *(f"{name}.{alias.name}" for alias in node.names)}
    return found


def test_the_wheel_ships_what_the_commands_run_and_no_test_harness(wheel: Path) -> None:
    shipped = {_module(wheel, p): p for p in (wheel / "agent").rglob("*.py")}
    reached: set[str] = set()
    todo = list(ENTRY_MODULES)
    while todo:
        module = todo.pop()
        if module in reached or module not in shipped:
            continue
        reached.add(module)
        todo += [module.rpartition(".")[0], *_imported(module, shipped[module])]
    assert set(shipped) - reached == set(), "shipped but never run: move test harness to tests/"
    # The demo's throwaway server and workload ship, and say why in one place.
    assert {"agent.demo.server", "agent.demo.workload"} <= reached
    assert "tests and benchmarks reuse" in (wheel / "agent/demo/__init__.py").read_text()
    sql = {p.relative_to(ROOT) for p in (ROOT / "agent").rglob("*.sql")}
    assert sql and {p.relative_to(wheel) for p in (wheel / "agent").rglob("*.sql")} == sql
    assert (wheel / "agent/py.typed").exists()


def test_every_shipped_module_imports_from_the_wheel_alone(wheel: Path) -> None:
    """Without the checkout on the path a module importing a test helper fails here."""
    modules = sorted(_module(wheel, p) for p in (wheel / "agent").rglob("*.py")
                     if p.name != "__main__.py")  # that one runs the command line
    check = ("import importlib, sys\nsys.path.insert(0, sys.argv[1])\n"
             f"for name in {modules!r}:\n"
             "    assert importlib.import_module(name).__file__.startswith(sys.argv[1]), name\n")
    result = subprocess.run([sys.executable, "-I", "-c", check, str(wheel)], cwd=wheel,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_test_files_share_helpers_never_each_other() -> None:
    """Shared test code lives in helper modules (tests/*.py not named test_*) or conftest."""
    importers = [*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    found = {f"{path.parent.name}/{path.name} imports {name}"
             for path in importers
             for name in _imported(_module(ROOT, path), path)
             if name.split(".")[0].startswith("test_")}
    assert found == set()


def test_the_package_data_ships_every_parts_sql() -> None:
    """The wheel carries what ``package-data`` names: every part folder's SQL must match it."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    shipped = {p for pattern in tool["setuptools"]["package-data"]["agent"]
               for p in (ROOT / "agent").glob(pattern)}
    sql = set((ROOT / "agent").rglob("*.sql"))
    assert sql and sql <= shipped, sorted(map(str, sql - shipped))
    # Every SQL folder is a part, or the catch sample that runs beside the poll.
    assert {p.parent.name for p in sql} == {part.name for part in discover()} | {catch.QUERY}
