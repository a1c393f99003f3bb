"""The Helm chart's sidecar example: valid Kubernetes, and it grants exactly what naming the
application's processes needs (shared process namespace, SYS_PTRACE + DAC_READ_SEARCH)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from agent import config

EXAMPLE = Path(__file__).resolve().parent.parent / "helm" / "pgconn-agent" / "examples" \
    / "sidecar.yaml"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def test_the_example_validates_strictly() -> None:
    result = subprocess.run([str(VALIDATE), "--strict", "--quiet", str(EXAMPLE)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_sidecar_shares_processes_with_only_the_two_capabilities() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(EXAMPLE.read_text(encoding="utf-8"))}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    (agent,) = [c for c in pod["containers"] if c["name"] == "pgconn-agent"]
    caps = agent["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}
    assert agent["securityContext"]["allowPrivilegeEscalation"] is False
    text = docs["ConfigMap"]["data"]["config.toml"]
    parsed = config.parse(tomllib.loads(text), "sidecar.yaml")
    assert parsed.client_processes and parsed.targets[0].name == "orders"
