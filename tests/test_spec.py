"""agent/spec.py is the one declaration of thresholds, attribute values and finding codes:
everything that repeats them (config, alert rules, dashboards, Helm schema, README) agrees with
it, every declared number is read where it says, and every reader reads a declared one."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest

from agent import alert_rules, config, contract, spec

ROOT = Path(__file__).resolve().parent.parent
ALL = (*spec.DIAGNOSE_THRESHOLDS, *spec.ALERT_THRESHOLDS, *spec.PANEL_THRESHOLDS)
ALERT_SOURCES = ("agent/alert_rules.py", "agent/alerts/*.py")


def _text(*globs: str) -> str:
    return "\n".join(p.read_text("utf-8") for g in globs for p in sorted(ROOT.glob(g)))


def test_threshold_names_are_unique_across_tables() -> None:
    names = [t.name for t in ALL]
    assert len(names) == len(set(names))


def test_each_diagnose_threshold_is_a_constant_named_after_its_key() -> None:
    constants = {name: v for name, v in vars(spec).items() if isinstance(v, spec.Threshold)}
    assert constants == {t.name.upper(): t for t in spec.DIAGNOSE_THRESHOLDS}


def test_config_thresholds_default_to_the_spec() -> None:
    defaults = config.Thresholds()
    assert dict(defaults) == {t: t.default for t in spec.DIAGNOSE_THRESHOLDS}
    assert config.parse({}, "test").thresholds == defaults
    for t in spec.DIAGNOSE_THRESHOLDS:  # int vs float decides how the config reads the key
        assert t.is_count == isinstance(t.default, int), t.name


def test_alert_rules_read_the_alert_thresholds() -> None:
    assert alert_rules.THRESHOLDS is spec.ALERT_THRESHOLDS
    assert {t.name: t.default for t in spec.ALERT_THRESHOLDS} == alert_rules.DEFAULTS


@pytest.mark.parametrize("twin", spec.TWINS, ids=lambda tw: f"{tw.diagnose}~{tw.alert}")
def test_twins_agree_or_say_why_not(twin: spec.Twin) -> None:
    diagnose, alert = spec.DIAGNOSE[twin.diagnose], spec.ALERTS[twin.alert]
    if twin.differs:
        assert diagnose.default != alert.default, "the declared difference is gone: drop it"
    else:
        assert diagnose.default == alert.default, "differing defaults need a declared reason"
        assert diagnose.unit == alert.unit


@pytest.mark.parametrize("low,high", spec.ORDERED)
def test_ordered_defaults(low: str, high: str) -> None:
    by_name = {t.name: t for t in ALL}
    assert by_name[low].default < by_name[high].default


def _threshold_reads(globs: str) -> set[str]:
    """Keys read as ``t[spec.KEY]`` from a parameter annotated ``Thresholds`` in the functions
    of ``globs``."""
    names: set[str] = set()
    for path in sorted(ROOT.glob(globs)):
        for fn in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(fn, ast.FunctionDef):
                continue
            params = {a.arg for a in fn.args.args
                      if a.annotation is not None and "Thresholds" in ast.unparse(a.annotation)}
            names |= {n.slice.attr.lower() for n in ast.walk(fn) if isinstance(n, ast.Subscript)
                      and isinstance(n.value, ast.Name) and n.value.id in params
                      and isinstance(n.slice, ast.Attribute)
                      and ast.unparse(n.slice.value) == "spec"}
    return names


def _reads(t: spec.Threshold) -> set[spec.Use]:
    """Where the source really reads ``t``."""
    found = set()
    if t.name in _threshold_reads("agent/diagnose/*.py"):
        found.add(spec.Use.DIAGNOSE)
    if re.search(rf"\[\[{t.name}\]\]|\"{t.name}\"", _text(*ALERT_SOURCES)):
        found.add(spec.Use.ALERTS)
    if re.search(rf"\[\"{t.name}\"\]", _text("dashboards/*.py")):
        found.add(spec.Use.DASHBOARDS)
    return found


@pytest.mark.parametrize("threshold", ALL, ids=lambda t: t.name)
def test_every_threshold_is_read_where_the_spec_says(threshold: spec.Threshold) -> None:
    assert threshold.used_in, "a threshold nothing reads"
    assert _reads(threshold) == set(threshold.used_in)


def test_nothing_reads_an_undeclared_threshold() -> None:
    declared = {t.name for t in ALL}
    diagnose = _threshold_reads("agent/diagnose/*.py")
    alerts = set(re.findall(r"\[\[([a-z]+_\w+)\]\]", _text(*ALERT_SOURCES)))
    panels = set(re.findall(r"spec\.[A-Z]+\[\"(\w+)\"\]", _text("dashboards/*.py")))
    assert diagnose | alerts | panels <= declared


def test_dashboards_draw_no_literal_threshold_steps() -> None:
    build = _text("dashboards/*.py")
    assert not re.search(r"\bBand\(\s*\d", build)
    assert "Orange from " not in build.replace('f"Orange from {', "")


def test_helm_schema_of_agent_thresholds_is_the_spec() -> None:
    schema = json.loads((ROOT / "helm/pgconn-agent/values.schema.json").read_text("utf-8"))
    props = schema["properties"]["thresholds"]["properties"]
    assert set(props) == set(spec.DIAGNOSE)
    for name, prop in props.items():
        t = spec.DIAGNOSE[name]
        assert prop["type"] == ("integer" if t.is_count else "number")
        assert ("maximum" in prop) == t.is_ratio


def test_readme_example_config_is_accepted_and_shows_thresholds_at_their_defaults() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    example = readme.split("```toml\n[agent]\n", 1)[1].split("```", 1)[0]
    parsed = config.parse(tomllib.loads("[agent]\n" + example), "README.md")
    shown = tomllib.loads("[agent]\n" + example)["thresholds"]
    assert shown and all(parsed.thresholds[spec.DIAGNOSE[k]] == spec.DIAGNOSE[k].default
                         for k in shown)
    assert "docs/thresholds.md" in example  # where the rest are


# --- finding codes ----------------------------------------------------------------------------

def _readme_finding_codes() -> set[str]:
    readme = (ROOT / "README.md").read_text("utf-8")
    table = readme.split("## `pgconn-agent diagnose`", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {code for row in rows for code in re.findall(r"`(\w+)`", row)}


def test_readme_findings_table_is_the_declared_codes() -> None:
    assert _readme_finding_codes() == set(spec.FINDINGS)


_CODE = re.compile(r"\"([a-z]+(?:_[a-z]+)+)\"(?:\s+if\s[^\n]*?else\s+\"([a-z_]+)\")?,"
                   r"\s*(?:Severity\.|severity\b)")
"""A finding code: a snake_case literal (or a choice of two) right before its severity, as in
``Finding("code", Severity.X, ...)``, ``Cause(...)`` or ``code, severity = "code", ...``."""


def test_every_code_written_in_the_diagnosis_is_declared() -> None:
    written = {code for pair in _CODE.findall(_text("agent/diagnose/*.py"))
               for code in pair if code}
    assert {"slots_high", "slots_exhausted", "process_many_pools"} <= written  # it finds them
    assert written <= set(spec.FINDINGS), written - set(spec.FINDINGS)
    assert {f"no_{s}" for s in ("idle_in_transaction_session_timeout",
                                "statement_timeout")} <= set(spec.FINDINGS)


# --- attribute values -------------------------------------------------------------------------

def test_contract_attribute_values_come_from_the_spec() -> None:
    assert tuple(spec.PollError) == contract.POLL_ERROR_KINDS
    assert tuple(spec.SessionOutcome) == contract.SESSION_OUTCOMES


def test_poll_error_kinds_are_named_by_the_enum_not_spelled_out() -> None:
    source = _text("agent/collect/*.py", "agent/daemon.py", "agent/diagnose/findings.py")
    spelled = {k for k in spec.PollError if f'"{k.value}"' in source}
    assert not spelled
    assert {k for k in spec.PollError if f"PollError.{k.name}" in source} == set(spec.PollError)


def test_idle_in_transaction_regex_matches_exactly_the_states() -> None:
    pattern = re.compile(spec.IDLE_IN_TRANSACTION_REGEX)
    assert {s for s in spec.State if pattern.fullmatch(s)} == set(spec.IDLE_IN_TRANSACTION)


def test_rules_and_dashboards_select_states_by_the_spec_not_by_literals() -> None:
    source = _text(*ALERT_SOURCES, "dashboards/*.py")
    literal = re.findall(r"state\s*(?:=|!=|=~|!~)\s*\\?[\"']([a-z][^\"'\\]*)", source)
    assert literal == []
    assert "spec.State.IDLE" in source and "spec.IDLE_IN_TRANSACTION_REGEX" in source


# --- prose quoting a threshold ----------------------------------------------------------------

_QUOTED = re.compile(r"`(\w+)`\s*\(([^),;]*)")
_AMOUNT = re.compile(r"(half|\d+(?:\.\d+)?)\s*(%|s|min|h)?")
_SCALE = {"%": 0.01, "s": 1, "min": 60, "h": 3600, None: 1}


def _quoted_defaults(text: str) -> list[tuple[str, float]]:
    """``(name, value)`` for every "`name` (80 %)" or "`name` (5 min, ...)" in ``text``."""
    found = []
    for name, said in _QUOTED.findall(text):
        amount = _AMOUNT.fullmatch(said.strip())
        if name in {t.name for t in ALL} and amount:
            number = 0.5 if amount[1] == "half" else float(amount[1])
            found.append((name, number * _SCALE[amount[2]]))
    return found


def test_quoting_finds_the_forms_the_runbooks_use() -> None:
    text = ("`near_limit_ratio` (80 %) for `near_limit_for_seconds` (5 min, warning), "
            "`app_share_ratio` (half), `churn_per_second` (5), `exhausted_ratio` (then ...)")
    assert _quoted_defaults(text) == [("near_limit_ratio", 0.8), ("near_limit_for_seconds", 300),
                                      ("app_share_ratio", 0.5), ("churn_per_second", 5)]


@pytest.mark.parametrize("doc", ["docs/runbooks.md", "alerts/README.md", "README.md",
                                 "dashboards/README.md", "helm/pgconn-agent/README.md"])
def test_prose_quotes_thresholds_at_their_defaults(doc: str) -> None:
    defaults = {t.name: t.default for t in ALL}
    wrong = [(name, said, defaults[name])
             for name, said in _quoted_defaults((ROOT / doc).read_text("utf-8"))
             if abs(said - defaults[name]) > 1e-9]
    assert not wrong, f"{doc} quotes (name, value, spec default): {wrong}"
