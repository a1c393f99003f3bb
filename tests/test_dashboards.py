"""The Grafana dashboards: generated JSON committed as is, contract metrics only, Grafana's types.

Real parts: Grafana's published dashboard types (npm ``@grafana/schema``) checked by the
TypeScript compiler, and Debian's Prometheus parsing and evaluating every panel query.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_server import Prometheus

from agent import alert_rules
from agent import contract as c
from dashboards import build
from dashboards.links import Alert
from dashboards.queries import Value, builtin_intervals, panel_queries

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards"
INSTALL_TOOLS = ROOT / "scripts" / "install-dashboard-tools.sh"

HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
DECLARED: dict[str, c.MetricSpec] = {}
for _spec in c.METRICS:
    DECLARED[_spec.prometheus_name] = _spec
    if _spec.instrument is c.Instrument.HISTOGRAM:
        for _suffix in HISTOGRAM_SERIES:
            DECLARED[_spec.prometheus_name + _suffix] = _spec
SCRAPE_LABELS = {"job", "cluster"}  # added by Prometheus (job) or its relabelling (cluster)
ALL_LABELS = {a for s in c.METRICS for a in s.attribute_names()} | {"le"}

_STRING = r'"(?:[^"\\]|\\.)*"'
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[^}\"]|" + _STRING + r")*)\}")
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(" + _STRING + r")\s*,?")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_METRIC_LIKE = re.compile(r"\b(?:postgresql|pgconn_agent|pgbouncer)_[a-zA-Z0-9_:]*")

SAMPLE_VARIABLES: dict[str, Value] = {"target": "db1", "application_name": "shop-web"}


def dashboards() -> dict[str, dict[str, Any]]:
    return build.rendered()


def raw_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, expr as written in the JSON) for every panel query."""
    for name, model in dashboards().items():
        for panel in _all_panels(model["panels"]):
            for target in panel.get("targets", []):
                yield name, panel["title"], target["expr"]


def _all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels", []))


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Every ``metric{...}`` in a PromQL expression: (metric, {label: (operator, value)})."""
    out = []
    for m in _SELECTOR.finditer(expr):
        body = m.group(2)
        matchers = {lm.group(1): (lm.group(2), json.loads(lm.group(3)))
                    for lm in _MATCHER.finditer(body)}
        assert "".join(lm.group(0) for lm in _MATCHER.finditer(body)).strip() == body.strip(), \
            f"unparsed matchers in {m.group(0)!r}"
        out.append((m.group(1), matchers))
    return out


# --------------------------------------------------------------------------------------------
# Generated, committed, stable


def test_generation_is_deterministic() -> None:
    first = [build.render(n) for n in build.DASHBOARDS]
    assert first == [build.render(n) for n in build.DASHBOARDS]


def test_stable_uids_titles_and_unique_panel_ids() -> None:
    models = dashboards()
    assert models["connections-overview.json"]["uid"] == "pgconn-connections-overview"
    assert models["application-drilldown.json"]["uid"] == "pgconn-application-drilldown"
    for name, model in models.items():
        ids = [p["id"] for p in _all_panels(model["panels"])]
        assert len(ids) == len(set(ids)), name
        assert all(isinstance(i, int) and i > 0 for i in ids), name
        assert "pgconn-agent" in model["tags"]
        assert len(model["uid"]) <= 40  # Grafana's limit


def test_panels_fit_the_grid_without_overlap() -> None:
    for name, model in dashboards().items():
        cells: set[tuple[int, int]] = set()
        for panel in model["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (name, panel["title"])
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, (name, panel["title"])
                    cells.add((x, y))


# --------------------------------------------------------------------------------------------
# Variables and panels


def test_variables_datasource_job_cluster_target_application() -> None:
    for name, model in dashboards().items():
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert list(variables) == ["datasource", "job", "cluster", "target", "application_name"]
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for var in ("job", "cluster", "target"):
            # "All" is .*, which also matches series without the label (no cluster label).
            assert variables[var]["includeAll"] and variables[var]["allValue"] == ".*", var
        assert 'cluster=~"$cluster"' in variables["target"]["query"]
        for var in ("job", "cluster", "target", "application_name"):
            v = variables[var]
            assert v["type"] == "query"
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            # Options come from the data at load time: nothing is baked in.
            assert not v.get("options") and not v.get("current"), (name, var)
            metric = re.match(r"label_values\((\w+)", v["query"])
            assert metric and metric.group(1) in DECLARED, v["query"]
    models = dashboards()
    overview = models["connections-overview.json"]["templating"]["list"][4]
    assert overview["multi"] and overview["includeAll"]
    drill = models["application-drilldown.json"]["templating"]["list"][4]
    assert not drill.get("multi") and not drill.get("includeAll")


def test_every_panel_has_description_unit_thresholds_and_queries_the_variable_datasource() -> None:
    for name, model in dashboards().items():
        for panel in _all_panels(model["panels"]):
            if panel["type"] == "row":
                continue
            where = (name, panel["title"])
            assert len(panel.get("description", "")) >= 40, where
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults.get("unit"), where
            assert defaults["thresholds"]["steps"][0]["value"] is None, where
            values = [s["value"] for s in defaults["thresholds"]["steps"][1:]]
            assert values == sorted(values), where
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], where


def test_panels_the_issue_asks_for() -> None:
    titles = {name: {p["title"] for p in _all_panels(m["panels"])}
              for name, m in dashboards().items()}
    assert {
        "Usable slots in use", "Used / usable slots", "Client backends by state",
        "Client backends by application", "Client backends by client host", "Top holders",
        "Idle in transaction by application", "Oldest idle in transaction by application",
        "Waiting sessions by wait event type", "Lock waiters by application",
        "Root blockers by application", "Blocked directly by application", "Root blockers (pid)",
        "New connections per second by application and host",
        "Session outcomes per second", "Connection settings", "Agent up", "Poll duration",
        "Poll errors and skipped polls", "Folded groups and hidden sessions",
    } <= titles["connections-overview.json"]
    assert {
        "Connections by host and state", "Oldest idle session by host",
        "Oldest idle in transaction by host", "Sessions this application blocks",
        "This application's lock waits", "Blockers on the same targets (what may block it)",
        "Sessions queued behind this application's root blockers",
        "Root blockers (pid)",  # the candidates' pids, which "Blockers on the same targets" cites
    } <= titles["application-drilldown.json"]


def test_usable_limit_is_drawn_on_the_state_panel() -> None:
    panel = next(p for p in dashboards()["connections-overview.json"]["panels"]
                 if p["title"] == "Client backends by state")
    exprs = [t["expr"] for t in panel["targets"]]
    assert any(c.CONNECTION_MAX.prometheus_name in e and c.CONNECTION_RESERVED.prometheus_name
               in e for e in exprs)
    override = panel["fieldConfig"]["overrides"][0]
    assert override["matcher"] == {"id": "byRegexp", "options": ".* usable limit$"}
    assert {"id": "custom.stacking", "value": {"group": "A", "mode": "none"}} in \
        override["properties"]


# --------------------------------------------------------------------------------------------
# Queries: contract metrics only, scoped by the variables


def test_every_metric_in_every_query_is_declared_in_the_contract() -> None:
    seen: set[str] = set()
    count = 0
    for name, title, expr in raw_queries():
        count += 1
        found = selectors(expr)
        assert found, (name, title, expr)
        for metric, matchers in found:
            assert metric in DECLARED, f"{name} / {title}: {metric} is not in agent/contract.py"
            spec = DECLARED[metric]
            allowed = set(spec.attribute_names()) | SCRAPE_LABELS
            if metric.endswith("_bucket"):
                allowed.add("le")
            assert set(matchers) <= allowed, (name, title, metric, set(matchers) - allowed)
            seen.add(spec.name)
        stripped = re.sub(_STRING, '""', expr)
        for word in _METRIC_LIKE.findall(stripped):
            assert word in DECLARED, f"{name} / {title}: {word} is not in agent/contract.py"
        for group in _GROUPING.findall(stripped):
            labels = {g.strip() for g in group.split(",") if g.strip()}
            assert labels <= ALL_LABELS, (name, title, labels - ALL_LABELS)
    assert count >= 40
    # Every metric of the contract is on some panel.
    assert seen == {s.name for s in c.METRICS}, {s.name for s in c.METRICS} - seen


def test_every_selector_is_scoped_to_the_target_variable_and_nothing_is_hard_coded() -> None:
    for name, title, expr in raw_queries():
        for metric, matchers in selectors(expr):
            assert matchers.get("target") == ("=~", "$target"), (name, title, metric)
            assert matchers.get("job") == ("=~", "$job"), (name, title, metric)
            assert matchers.get("cluster") == ("=~", "$cluster"), (name, title, metric)
            if "application_name" in matchers:
                assert matchers["application_name"][1] == "$application_name", (name, title)
            for label, (_, value) in matchers.items():
                if label in ("target", "application_name", *SCRAPE_LABELS):
                    continue
                # Only the server's own vocabulary is spelled out: states, outcomes, scopes.
                assert label in ("state", "scope"), (name, title, label, value)


def test_application_filter_reaches_every_application_panel() -> None:
    server_wide = {
        "connections-overview.json": {
            "Used / usable slots", "Free usable slots", "Client backends by state",
            "Role and database connection limits",
        },
        "application-drilldown.json": {"Blockers on the same targets (what may block it)",
                                       "Root blockers (pid)"},
        "pgbouncer-pools.json": {"Client connections of max_client_conn"},
    }
    for name, model in dashboards().items():
        unfiltered = set()
        for panel in _all_panels(model["panels"]):
            for target in panel.get("targets", []):
                for metric, matchers in selectors(target["expr"]):
                    if ("application_name" in DECLARED[metric].attribute_names()
                            and "application_name" not in matchers):
                        unfiltered.add(panel["title"])
        assert unfiltered == server_wide[name]


def _panel(dashboard: str, title: str) -> dict[str, Any]:
    return next(p for p in _all_panels(dashboards()[dashboard]["panels"]) if p["title"] == title)


def test_holders_link_into_the_drilldown() -> None:
    overview = "connections-overview.json"
    top = _panel(overview, "Top holders")
    (override,) = [o for o in top["fieldConfig"]["overrides"]
                   if o["matcher"] == {"id": "byName", "options": "Application"}]
    (link,) = override["properties"][0]["value"]
    assert link["url"].startswith(f"/d/{build.DRILLDOWN_UID}?var-application_name="
                                  "${__value.raw}&var-target=${__data.fields.Target}")
    for var in ("datasource", "job", "cluster"):
        assert f"${{{var}:queryparam}}" in link["url"]
    for title in ("Client backends by application", "Idle client backends by application and host"):
        (link,) = _panel(overview, title)["fieldConfig"]["defaults"]["links"]
        assert "var-application_name=${__field.labels.application_name}" in link["url"], title
    assert _panel(overview, "Root blockers (pid)")["fieldConfig"]["overrides"]


def test_runbook_links_point_at_existing_sections() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text(encoding="utf-8")
    sections = {line[3:].strip().lower() for line in runbooks.splitlines()
                if line.startswith("## ")}
    linked: set[str] = set()
    for model in dashboards().values():
        for panel in _all_panels(model["panels"]):
            for link in panel.get("links", []):
                base, _, anchor = link["url"].partition("#")
                assert base == build.RUNBOOK_BASE, link
                assert anchor in sections, link
                linked.add(anchor)
    assert {"postgresqlconnectionsexhausted", "postgresqlblockedbyidleintransaction",
            "pgconnagentpollsstalled"} <= linked


def test_panels_link_the_runbooks_of_shipped_alerts() -> None:
    assert set(Alert) <= set(alert_rules.ALERT_NAMES)


def _confirm_paragraphs() -> dict[str, str]:
    """Each runbook section's "Confirm." paragraph, by its anchor (the alert name, lowercase)."""
    runbooks = (ROOT / "docs" / "runbooks.md").read_text(encoding="utf-8")
    out = {}
    for section in re.split(r"^## ", runbooks, flags=re.M)[1:]:
        name, _, body = section.partition("\n")
        confirm = re.search(r"\*\*Confirm\.\*\*(.*?)(?:\n\n|$)", body, re.S)
        if confirm:
            out[name.strip().lower()] = " ".join(confirm.group(1).split())
    return out


def test_every_panel_a_runbook_confirms_with_links_to_that_runbook() -> None:
    """The runbook sends on-call to a panel; the panel leads back to the runbook. A panel
    drawn from a shared measure links the same runbooks on the overview and the drill-down."""
    panels = [p for model in dashboards().values() for p in _all_panels(model["panels"])]
    checked = 0
    for anchor, confirm in _confirm_paragraphs().items():
        for named in re.findall(r'"([^"]+)"', confirm):
            for panel in panels:
                if panel["title"] == named or panel["title"].startswith(named + " ("):
                    anchors = {link["url"].partition("#")[2] for link in panel.get("links", [])}
                    assert anchor in anchors, (panel["title"], anchor)
                    checked += 1
    assert checked >= 40  # the runbooks name panels of all three dashboards
    by_measure = ("Oldest open transaction by", "Oldest idle in transaction by", "New connections")
    for prefix in by_measure:
        links = {json.dumps(p.get("links"), sort_keys=True) for p in panels
                 if p["title"].startswith(prefix)}
        assert len(links) == 1 and "null" not in links, prefix


def test_limits_say_none_set_instead_of_no_data() -> None:
    panel = _panel("connections-overview.json", "Role and database connection limits")
    exprs = [t["expr"] for t in panel["targets"]]
    for expr in exprs:
        for scope in ("role", "database"):
            assert f'"scope", "{scope}", "", ""), "name", "none set"' in expr, expr
    mapping = next(o for o in panel["fieldConfig"]["overrides"]
                   if o["matcher"]["options"] == "Limit")["properties"][0]["value"]
    assert mapping == [{"type": "value",
                        "options": {str(build.NONE_SET): {"text": "none set", "index": 0}}}]


# --------------------------------------------------------------------------------------------
# panel_queries: Grafana's interpolation


def test_panel_queries_substitutes_every_variable() -> None:
    for name, model in dashboards().items():
        queries = panel_queries(model, SAMPLE_VARIABLES)
        assert len(queries) == sum(len(p.get("targets", [])) for p in _all_panels(model["panels"]))
        for title, expr in queries:
            leftover = re.findall(r"\$(?!1\b)\w+|\[\[\w+\]\]", expr)
            assert not leftover, (name, title, leftover)
            assert "db1" in expr, (name, title)


def test_panel_queries_escapes_like_grafana() -> None:
    model = {
        "templating": {"list": [
            {"name": "target", "type": "query", "multi": True, "includeAll": True,
             "allValue": ".*"},
            {"name": "application_name", "type": "query"},
            {"name": "datasource", "type": "datasource"},
        ]},
        "panels": [
            {"title": "row", "type": "row", "panels": [
                {"title": "nested", "targets": [
                    {"expr": 'x{target=~"$target", application_name="${application_name}"}'},
                    {"expr": "hidden", "hide": True},
                ]},
            ]},
            {"title": "builtins", "targets": [
                {"expr": 'rate(x[$__rate_interval]) + y[$__range] + $__range_s'
                         ' + label_replace(z, "a", "$1", "b", "(.*)") + [[target]]'},
            ]},
        ],
    }
    got = panel_queries(model, {"target": "127.0.0.1:5432/postgres", "application_name": "a'b"},
                        rate_interval="2m", range_="1h")
    assert got == [
        ("nested", 'x{target=~"127\\\\.0\\\\.0\\\\.1:5432/postgres", application_name="a\\\\\'b"}'),
        ("builtins", 'rate(x[2m]) + y[1h] + 3600 + label_replace(z, "a", "$1", "b", "(.*)")'
                     ' + 127\\\\.0\\\\.0\\\\.1:5432/postgres'),
    ]
    several = panel_queries(model, {"target": ["a.b", "c"], "application_name": "x"})
    assert several[0][1].startswith('x{target=~"(a\\\\.b|c)"')
    everything = panel_queries(model, {"application_name": "x"})
    assert everything[0][1].startswith('x{target=~".*"')
    with pytest.raises(KeyError, match="application_name"):
        panel_queries(model, {"target": "a"})
    with pytest.raises(KeyError, match="does not declare"):
        panel_queries({"panels": [{"title": "t", "targets": [{"expr": "$nope"}]}]}, {})
    assert builtin_intervals(interval="30s")["__interval_ms"] == "30000"


# --------------------------------------------------------------------------------------------
# Grafana's published types (TypeScript)

LOOSE_TS = """\
// JSON cannot name a TypeScript enum member: a string enum field takes the enum's values.
export type Json<T> = T extends string ? `${T}`
    : T extends object ? { [K in keyof T]: Json<T[K]> } : T;
// An imported JSON module's strings are widened to string: compare like with like.
export type Widened<T> = T extends string ? string
    : T extends object ? { [K in keyof T]: Widened<T[K]> } : T;
"""


def dashboard_tools() -> Path:
    """Install (idempotently) @grafana/schema and typescript; fail if that is impossible."""
    result = subprocess.run(["bash", str(INSTALL_TOOLS)], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, \
        f"cannot install the dashboard check's tools:\n{result.stderr[-3000:]}"
    path = Path(result.stdout.strip().splitlines()[-1])
    assert (path / "node_modules" / ".bin" / "tsc").exists()
    assert (path / "node_modules" / "@grafana" / "schema" / "package.json").exists()
    return path


def typecheck(workdir: Path, models: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """tsc over (a) each JSON file imported as a module and (b) each inlined as a literal.

    (a) is the JSON file Grafana loads, typed as TypeScript types JSON modules; (b) adds the
    checks JSON modules do not get: enum values and excess (unknown) properties.
    """
    tools = dashboard_tools()
    link = workdir / "node_modules"
    if not link.exists():
        link.symlink_to(tools / "node_modules", target_is_directory=True)
    (workdir / "loose.ts").write_text(LOOSE_TS, encoding="utf-8")
    files = ["loose.ts"]
    for i, (name, text) in enumerate(sorted(models.items())):
        stem = name.removesuffix(".json")
        (workdir / name).write_text(text, encoding="utf-8")
        imported = workdir / f"import_{i}.ts"
        imported.write_text(
            "import type { Dashboard } from '@grafana/schema';\n"
            "import type { Widened } from './loose';\n"
            f"import model from './{name}';\n"
            "export const dashboard: Widened<Dashboard> = model;\n", encoding="utf-8")
        inlined = workdir / f"literal_{i}.ts"
        inlined.write_text(
            "import type { Dashboard } from '@grafana/schema';\n"
            "import type { Json } from './loose';\n"
            f"// {stem}\n"
            f"export const dashboard: Json<Dashboard> = {text};\n", encoding="utf-8")
        files += [imported.name, inlined.name]
    return subprocess.run(
        [str(tools / "node_modules" / ".bin" / "tsc"), "--noEmit", "--strict",
         "--resolveJsonModule", "--esModuleInterop", "--target", "es2022",
         "--module", "nodenext", "--moduleResolution", "nodenext", *files],
        cwd=workdir, capture_output=True, text=True, timeout=300, check=False)


def test_dashboards_match_grafanas_published_dashboard_type(tmp_path: Path) -> None:
    models = {name: (DASHBOARD_DIR / name).read_text(encoding="utf-8")
              for name in build.DASHBOARDS}
    result = typecheck(tmp_path, models)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


@pytest.mark.parametrize("mutation, message", [
    (lambda d: d.__setitem__("refreh", "30s"), "refreh"),
    (lambda d: d["panels"][1]["fieldConfig"]["defaults"]["thresholds"].__setitem__(
        "mode", "absolut"), "absolut"),
    (lambda d: d["templating"]["list"][1].__setitem__("type", "querry"), "querry"),
    (lambda d: d["panels"][1]["gridPos"].__setitem__("h", "7"), "not assignable"),
    (lambda d: d["panels"][1].__delitem__("type"), "type"),
])
def test_structural_check_rejects_a_broken_dashboard(tmp_path: Path, mutation: Any,
                                                     message: str) -> None:
    model = dashboards()["connections-overview.json"]
    mutation(model)
    result = typecheck(tmp_path, {"broken.json": json.dumps(model, indent=2)})
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]


# --------------------------------------------------------------------------------------------
# Every query parses and evaluates on a real Prometheus


@pytest.fixture
def empty_prometheus() -> Iterator[Prometheus]:
    prom = Prometheus()
    try:
        yield prom
    finally:
        prom.stop()


def test_every_panel_query_is_valid_promql(empty_prometheus: Prometheus) -> None:
    """Parsed and evaluated by Prometheus itself (no data: the end-to-end test has the data)."""
    checked = 0
    for name, model in dashboards().items():
        for variables in (SAMPLE_VARIABLES, {"target": ["a.b:5432/x", "c"],
                                             "application_name": ["(unset)", "shop-web"]}):
            if name == "application-drilldown.json" and not isinstance(
                    variables["application_name"], str):
                variables = {**variables, "application_name": "(unset)"}
            for title, expr in panel_queries(model, variables):
                answer = empty_prometheus.raw_query(expr)
                assert answer.get("status") == "success", (name, title, expr, answer)
                checked += 1
    for var in ("target", "application_name"):
        for model in dashboards().values():
            v = next(x for x in model["templating"]["list"] if x["name"] == var)
            expr = re.sub(r"^label_values\((.*), *(\w+)\)$", r"group by (\2) (\1)", v["query"])
            expr = expr.replace("$target", ".*")
            answer = empty_prometheus.raw_query(expr)
            assert answer.get("status") == "success", (var, expr, answer)
    assert checked >= 80


# --------------------------------------------------------------------------------------------
# Provisioning


def test_provisioning_examples_load_the_committed_files() -> None:
    import yaml

    provider = yaml.safe_load((DASHBOARD_DIR / "provisioning" / "pgconn-agent.yaml").read_text())
    assert provider["apiVersion"] == 1
    [entry] = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"].startswith("/")
    datasource = yaml.safe_load(
        (DASHBOARD_DIR / "provisioning" / "datasource-prometheus.yaml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    readme = (DASHBOARD_DIR / "README.md").read_text()
    for name in (*build.DASHBOARDS, "provisioning/pgconn-agent.yaml"):
        assert name in readme
    for model in dashboards().values():
        # A provisioned dashboard is matched by uid; a numeric id would clash across instances.
        assert "id" not in model
