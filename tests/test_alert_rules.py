"""The alert rules: generated file in sync, valid for promtool, unit-tested, contract names."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import install_helm
from rule_support import normalized

from agent import alert_rules as ar
from agent import contract, spec
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "alerts").glob("*.rules.yml"))
TEST_FILES = sorted((ROOT / "tests" / "alerts").glob("*.test.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run scripts/setup.sh (Debian package prometheus)")
    return path


def run_promtool(*args: str) -> str:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, check=False,
                            timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def all_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"]]


# --- the generated file -------------------------------------------------------------------

def test_every_alert_says_when_it_fires_with_declared_thresholds() -> None:
    assert list(ar.FIRES) == list(ar.ALERT_NAMES)
    for name, text in ar.FIRES.items():
        for token in re.findall(r"\[\[(\w+)\]\]", text):
            assert token in ar.DEFAULTS, (name, token)
    table = ar.alerts_markdown()
    assert "[[" not in table and f"> {spec.ALERTS['exhausted_ratio'].said} of usable" in table


def test_rendering_round_trips_to_the_rule_data() -> None:
    assert yaml.safe_load(ar.render_rules({}))["groups"] == ar.rule_groups({})


def test_rule_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == ["pgconn-agent.rules.yml"]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    out = run_promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(ar.ALERTS)} rules found" in out


def test_promtool_unit_tests() -> None:
    assert TEST_FILES, "no promtool unit tests under tests/alerts/"
    out = run_promtool("test", "rules", *map(str, TEST_FILES))
    assert out.count("SUCCESS") == len(TEST_FILES), out


def test_promtool_check_rules_with_overrides_and_settings(tmp_path: Path) -> None:
    overrides = {t.name: t.default * 0.5 + (0 if t.unit == "ratio" else 1) for t in ar.THRESHOLDS}
    settings = ar.Settings(selector='job="pgconn-agent", env=~"prod.*"',
                           group_by=("cluster", "job"), runbook_base="https://wiki.example/rb")
    path = tmp_path / "overridden.rules.yml"
    path.write_text(ar.render_rules(overrides, settings), encoding="utf-8")
    run_promtool("check", "rules", str(path))


# --- every alert is unit-tested: fires on its situation, quiet when healthy ----------------

def _unit_tests() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["rule_files"] == ["../../alerts/pgconn-agent.rules.yml"], path
        for test in doc["tests"]:
            out.extend((path.name, case) for case in test.get("alert_rule_test", []))
    return out


def test_every_alert_fires_in_a_unit_test_with_its_annotations() -> None:
    rules = all_rules(ar.rule_groups())
    fired: dict[str, set[str]] = {}
    for _, case in _unit_tests():
        for alert in case["exp_alerts"]:
            assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
            fired.setdefault(case["alertname"], set()).add(alert["exp_labels"]["severity"])
    expected: dict[str, set[str]] = {}
    for rule in rules:
        expected.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    assert fired == expected


def test_every_alert_is_quiet_on_the_healthy_series() -> None:
    quiet = {case["alertname"] for name, case in _unit_tests()
             if name == "healthy.test.yml" and case["exp_alerts"] == []}
    assert quiet == set(ar.ALERT_NAMES)


# --- names: the contract's metrics, runbook anchors -----------------------------------------

_METRIC = re.compile(r"\b(?:postgresql|pgconn_agent|pgbouncer)_[a-zA-Z0-9_]*")


def _declared() -> set[str]:
    names = set()
    for metric in contract.METRICS:
        names.add(metric.prometheus_name)
        if metric.instrument is contract.Instrument.HISTOGRAM:
            names.update(metric.prometheus_name + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_every_metric_in_the_rules_is_declared_in_the_contract() -> None:
    used: set[str] = set()
    for rule in all_rules(ar.rule_groups()):
        texts = (rule["expr"], rule["annotations"]["summary"], rule["annotations"]["description"])
        for text in texts:
            used.update(_METRIC.findall(text))
    assert used, "no metric names found: the regex is broken"
    assert used - _declared() == set()
    # The alerts use the metrics issue 4 is about, not just any declared name.
    assert {"postgresql_connection_count", "postgresql_connection_utilization_ratio",
            "postgresql_lock_root_blocking", "postgresql_lock_root_blocker",
            "postgresql_connection_limit",
            "pgconn_agent_up"} <= used


def test_the_metric_regex_would_catch_an_undeclared_name() -> None:
    text = "sum(postgresql_connection_total_bogus) + pgconn_agent_poll_duration_seconds_count"
    assert set(_METRIC.findall(text)) - _declared() == {"postgresql_connection_total_bogus"}


def _anchors(markdown: str) -> set[str]:
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


def test_every_alert_has_a_runbook_section() -> None:
    anchors = _anchors(RUNBOOKS.read_text(encoding="utf-8"))
    for rule in all_rules(ar.rule_groups()):
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == ar.RUNBOOK_BASE == ar.Settings().runbook_base
        assert base.endswith("/" + RUNBOOKS.relative_to(ROOT).as_posix())
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"docs/runbooks.md has no section {rule['alert']}"


def test_runbooks_cover_confirmation_and_causes() -> None:
    text = RUNBOOKS.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    by_name = {s.split("\n", 1)[0].strip(): s for s in sections}
    assert set(ar.ALERT_NAMES) <= set(by_name)
    for name in ar.ALERT_NAMES:
        body = by_name[name]
        for part in ("**Meaning.**", "**Confirm.**", "**Likely causes.**", "**Fix.**"):
            assert part in body, f"{name}: no {part}"
        assert "pgconn-agent diagnose" in body, name


# --- annotations: helpful, never the wrong fix ----------------------------------------------

def test_alerts_have_severity_and_annotations() -> None:
    for rule in all_rules(ar.rule_groups()):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert rule["alert"] == rule["alert"].strip() and re.fullmatch(r"[A-Za-z]+",
                                                                       rule["alert"])


def test_no_alert_recommends_raising_max_connections() -> None:
    texts = [r["annotations"]["description"] + " " + r["annotations"]["summary"]
             for r in all_rules(ar.rule_groups())]
    for text in texts:
        for sentence in re.split(r"(?<=[.;])\s", text):
            if re.search(r"(?i)\b(increas|rais|bump|add)\w*\b[^.;]*max_connections", sentence):
                assert "only gives the holder more" in sentence, sentence


def test_holder_alerts_name_the_application_and_its_idle_count() -> None:
    rules = {r["alert"]: r for r in all_rules(ar.rule_groups())}
    for name in ("PostgreSQLApplicationHoldsMostSlots", "PostgreSQLApplicationHostHoldsMostSlots"):
        a = rules[name]["annotations"]
        assert "$labels.application_name" in a["summary"]
        assert "state='idle'" in a["description"] and "of them are idle" in a["description"]
    assert "$labels.client_addr" in rules["PostgreSQLApplicationHostHoldsMostSlots"][
        "annotations"]["summary"]


# --- thresholds ----------------------------------------------------------------------------

def test_overrides_change_thresholds_and_durations() -> None:
    text = ar.render_rules({"near_limit_ratio": 0.7, "near_limit_for_seconds": 90,
                            "idle_hoarding_connections": 40})
    rules = {(r["alert"], r["labels"]["severity"]): r
             for r in all_rules(yaml.safe_load(text)["groups"])}
    near = rules[("PostgreSQLConnectionsNearLimit", "warning")]
    assert "> 0.7 <= 0.95" in near["expr"]
    assert near["for"] == "1m30s"
    assert ">= 40" in rules[("PostgreSQLIdleConnectionHoarding", "warning")]["expr"]
    assert rules[("PostgreSQLConnectionsExhausted", "critical")]["expr"].endswith("> 0.95")
    assert "# Overridden: near_limit_ratio=0.7, near_limit_for_seconds=90, " \
           "idle_hoarding_connections=40" in text


def test_every_threshold_is_used() -> None:
    sources = " ".join(a.expr + " " + a.for_ for a in ar.ALERTS)
    for t in ar.THRESHOLDS:
        assert t.name in sources, t.name


@pytest.mark.parametrize(("bad", "message"), [
    ({"no_such_threshold": 1.0}, "unknown alert threshold 'no_such_threshold'"),
    ({"near_limit_ratio": -1.0}, r"near_limit_ratio: expected a ratio in \(0, 1\], found -1"),
    ({"near_limit_ratio": 7.0}, r"near_limit_ratio: expected a ratio in \(0, 1\], found 7"),
    ({"near_limit_ratio": float("nan")}, "near_limit_ratio: expected a finite number"),
    ({"near_limit_ratio": 0.99}, r"near_limit_ratio: near_limit_ratio \(0.99\) must be below "
                                 r"exhausted_ratio \(0.95\)"),
    ({"idle_in_transaction_critical_seconds": 30},
     r"idle_in_transaction_critical_seconds: idle_in_transaction_warning_seconds \(60\) must"),
    ({"idle_hoarding_age_seconds": 0}, "idle_hoarding_age_seconds: expected a number > 0"),
    ({"holder_for_seconds": -5}, "holder_for_seconds: expected a duration >= 0 seconds"),
])
def test_senseless_overrides_are_one_line_errors_naming_the_key(bad: dict[str, float],
                                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ar.render_rules(bad)
    assert "\n" not in str(info.value)


def test_zero_for_durations_are_allowed() -> None:
    assert ar.validate_overrides({"near_limit_for_seconds": 0})["near_limit_for_seconds"] == 0


def test_parse_sets() -> None:
    overrides, settings = ar.parse_sets([
        "near_limit_ratio=0.75", " exhausted_ratio = 0.9", 'selector=job="pgconn-agent"',
        "group_by=cluster, job", "runbook_base=https://wiki.example/runbooks"])
    assert overrides == {"near_limit_ratio": 0.75, "exhausted_ratio": 0.9}
    assert settings == ar.Settings('job="pgconn-agent"', ("cluster", "job"),
                                   "https://wiki.example/runbooks")
    for bad, message in (("near_limit_ratio", "NAME=VALUE"), ("near_limit_ratio=x", "number"),
                         ("bogus=1", "unknown alert threshold 'bogus'"),
                         ("selector=job=x", "alert setting selector"),
                         ("group_by=cluster,target", "alert setting group_by: .*'target'"),
                         ("group_by=a,a", "alert setting group_by: repeated"),
                         ("group_by=1x", "alert setting group_by: .*'1x'"),
                         ("runbook_base=wiki/page", "alert setting runbook_base")):
        with pytest.raises(ConfigError, match=message):
            ar.parse_sets([bad])


def test_settings_reach_every_expression_and_lookup() -> None:
    settings = ar.Settings(selector='job="pgconn-agent"', group_by=("cluster", "job"),
                           runbook_base="https://wiki.example/runbooks")
    for rule in all_rules(ar.rule_groups({}, settings)):
        expr, description = rule["expr"], rule["annotations"]["description"]
        for name in _METRIC.findall(expr):  # every metric an expression reads is selected
            assert re.search(re.escape(name) + r'\{[^}]*job="pgconn-agent"', expr), (
                rule["alert"], name)
        for by in re.findall(r"\b(?:by|on) \(([^)]*)\)", expr):
            labels = [x.strip() for x in by.split(",")]
            if "target" in labels or "instance" in labels:
                assert labels[:2] == ["cluster", "job"], (rule["alert"], by)
        for fmt in re.findall(r"target=%q[^}]*", description):
            assert fmt.startswith("target=%q,cluster=%q,job=%q"), (rule["alert"], fmt)
        assert description.count("$labels.target $labels.cluster $labels.job") == \
            description.count("target=%q"), rule["alert"]
        assert rule["annotations"]["runbook_url"].startswith("https://wiki.example/runbooks#")


def test_one_alert_per_cause_is_in_the_expressions() -> None:
    """The inhibitions live in PromQL, not in an Alertmanager configuration."""
    rules = {(r["alert"], r["labels"]["severity"]): r["expr"] for r in all_rules(ar.rule_groups())}
    exhausted = ("unless on (target) ( max by (target) "
                 "(postgresql_connection_utilization_ratio) > 0.95 )")
    for name in ("PostgreSQLApplicationHoldsMostSlots", "PostgreSQLApplicationHostHoldsMostSlots",
                 "PostgreSQLIdleConnectionHoarding"):
        assert exhausted in " ".join(rules[(name, "warning")].split()), name
    assert "> 0.8 <= 0.95" in rules[("PostgreSQLConnectionsNearLimit", "warning")]
    app_holds = "sum by (target, application_name) (postgresql_connection_count)"
    for name in ("PostgreSQLConnectionsNearLimit", "PostgreSQLIdleConnectionHoarding"):
        assert app_holds in rules[(name, "warning")], name
    assert "> 60 <= 300" in rules[("PostgreSQLIdleInTransaction", "warning")]
    for severity in ("warning", "critical"):
        assert "postgresql_lock_root_blocking" in rules[("PostgreSQLIdleInTransaction", severity)]


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (1, "1s"), (90, "1m30s"),
                                                (300, "5m"), (7200, "2h"), (0.5, "500ms"),
                                                (3725.5, "1h2m5s500ms")])
def test_duration(seconds: float, text: str) -> None:
    assert ar.duration(seconds) == text


# --- the Helm variant, rendered by the official helm binary ----------------------------------

@pytest.fixture(scope="module")
def helm_rules(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[dict[str, Any]]]:
    """``helm template`` of a minimal chart carrying ``render_rules_helm(indent=4)`` in a
    ConfigMap; call it with extra values, get the rule groups back."""
    helm = install_helm()
    tmp = tmp_path_factory.mktemp("helm")
    chart = tmp / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: rules\nversion: 0.1.0\n",
                                      encoding="utf-8")
    (chart / "values.yaml").write_text(yaml.safe_dump(
        {"alerts": {"thresholds": ar.helm_values(), **ar.helm_settings()}}), encoding="utf-8")
    (chart / "templates" / "rules.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rules\ndata:\n"
        "  pgconn-agent.rules.yml: |\n" + ar.render_rules_helm(indent=4), encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", **{v: str(tmp / v.lower()) for v in (
        "HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}

    def rendered(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        extra = tmp / "extra.yaml"
        extra.write_text(yaml.safe_dump({"alerts": values or {}}), encoding="utf-8")
        result = subprocess.run([helm, "template", "rel", str(chart), "-f", str(extra)],
                                env=env, capture_output=True, text=True, check=False,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        (doc,) = [d for d in yaml.safe_load_all(result.stdout) if d]
        text = doc["data"]["pgconn-agent.rules.yml"]
        (tmp / "rendered.rules.yml").write_text(text, encoding="utf-8")
        run_promtool("check", "rules", str(tmp / "rendered.rules.yml"))
        groups: list[dict[str, Any]] = yaml.safe_load(text)["groups"]
        return groups

    return rendered


def test_helm_variant_renders_to_the_default_rules(
        helm_rules: Callable[..., list[dict[str, Any]]]) -> None:
    template = ar.render_rules_helm()
    assert "{{ .Values.alerts.thresholds.near_limit_ratio }}" in template
    assert "$labels" in template and "{{`" in template
    assert normalized(helm_rules()) == normalized(ar.rule_groups())


def test_helm_variant_reads_changed_thresholds(
        helm_rules: Callable[..., list[dict[str, Any]]]) -> None:
    assert ar.render_rules_helm(indent=2).startswith("  groups:\n")
    changed = helm_rules({"thresholds": {"near_limit_ratio": 0.7, "near_limit_for_seconds": 90}})
    assert normalized(changed) == normalized(ar.rule_groups(
        {"near_limit_ratio": 0.7, "near_limit_for_seconds": 90}))


def test_helm_variant_reads_the_settings(
        helm_rules: Callable[..., list[dict[str, Any]]]) -> None:
    settings = ar.Settings(selector='job="pgconn-agent",env=~"prod.*"',
                           group_by=("cluster", "job"), runbook_base="https://wiki.example/rb")
    got = helm_rules({"selector": settings.selector, "groupBy": list(settings.group_by),
                      "runbookBase": settings.runbook_base})
    assert normalized(got) == normalized(ar.rule_groups({}, settings))


def test_helm_values_cover_every_threshold() -> None:
    assert set(ar.helm_values()) == set(ar.DEFAULTS)
    assert all(isinstance(v, int) for k, v in ar.helm_values().items()
               if k.endswith("_for_seconds"))


def test_rules_command_takes_settings_and_rejects_senseless_values() -> None:
    from click.testing import CliRunner

    from agent.cli import main

    ok = CliRunner().invoke(main, ["rules", "--set", 'selector=job="pg"', "--set",
                                   "group_by=cluster", "--set",
                                   "runbook_base=https://wiki.example/rb"])
    assert ok.exit_code == 0, ok.output
    groups = yaml.safe_load(ok.output)["groups"]
    assert normalized(groups) == normalized(ar.rule_groups({}, ar.Settings(
        'job="pg"', ("cluster",), "https://wiki.example/rb")))
    for bad, key in (("near_limit_ratio=7", "near_limit_ratio"),
                     ("near_limit_ratio=0.99", "near_limit_ratio"),
                     ("group_by=target", "group_by"), ("runbook_base=x", "runbook_base")):
        result = CliRunner().invoke(main, ["rules", "--set", bad])
        assert result.exit_code == 2, (bad, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and key in lines[0], (bad, result.output)
