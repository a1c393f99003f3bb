"""The chart's ``replicas: N``: a StatefulSet whose pod ordinal is the agent's shard.

Rendered with the real helm binary (tests/helm_support.py); the shard variable as Kubernetes
expands it for each pod is then given to the agent's own config loader and sharding.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from helm_support import one, render

from agent import config as agent_config
from agent.shard import mine

TARGETS = [{"name": f"s{s}-db{d}", "dsn": f"host=pg{s}.db.svc dbname=db{d} user=pgconn_agent"}
           for s in range(6) for d in range(3)]


def test_one_replica_stays_a_deployment(helm: list[str], tmp_path: Path) -> None:
    docs = render(helm, {"targets": TARGETS}, tmp_path)
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    env = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "PGCONN_AGENT_SHARD" not in {e["name"] for e in env}


def test_replicas_render_a_statefulset_whose_pods_split_the_targets(
        helm: list[str], tmp_path: Path) -> None:
    docs = render(helm, {"targets": TARGETS, "replicas": 3}, tmp_path)
    assert not [d for d in docs if d["kind"] == "Deployment"]
    sts: dict[str, Any] = one(docs, "StatefulSet")
    service = one(docs, "Service")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGCONN_AGENT_SHARD"]["value"] == "$(POD_NAME)/3"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    text = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.toml"]
    config = agent_config.parse(tomllib.loads(text), "config.toml")
    name = sts["metadata"]["name"]
    shares = []
    for ordinal in range(3):
        # What Kubernetes expands $(POD_NAME)/3 to in pod <statefulset>-<ordinal>.
        shard = agent_config.load(None, {"shard": f"{name}-{ordinal}/3"}).shard
        assert shard == (ordinal, 3)
        shares.append({t.name for t in mine(config.targets, shard)})
    assert sorted(n for share in shares for n in share) == sorted(t["name"] for t in TARGETS)
    assert all(shares)
