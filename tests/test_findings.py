"""Each diagnosis rule on hand-built attributions: it fires on its situation, quiet otherwise."""

from __future__ import annotations

from snapshots import SETTINGS, ConnectionLimit, group, session, snapshot

from agent import contract as c
from agent.aggregate.attribution import attribute
from agent.collect.snapshot import Setting
from agent.config import Thresholds
from agent.diagnose.findings import Finding, Severity, diagnose
from agent.diagnose.render import Report, as_dict, safe, text


def codes(findings: list[Finding]) -> dict[str, Severity]:
    return {f.code: f.severity for f in findings}


def test_healthy_server_has_no_findings() -> None:
    snap = snapshot([group("shop-web", "idle", 5, state_age=3.0),
                     group("shop-web", "active", 2, state_age=0.1, xact_age=0.1),
                     group("billing", "idle", 3, addr="10.0.0.9", state_age=2.0)])
    assert diagnose(attribute(snap)) == []


def test_pool_full_with_one_user() -> None:
    snap = snapshot([
        group("shop-web", "idle", 80, state_age=300.0),
        group("shop-web", "idle in transaction", 8, state_age=400.0, xact_age=410.0),
        group("shop-web", "active", 6, state_age=100.0, xact_age=100.0),
    ], sessions=(session(100, state="idle in transaction", state_age=400.0, xact_age=410.0),
                 *(session(101 + i, blocking=(100,)) for i in range(6))))
    found = diagnose(attribute(snap))
    got = codes(found)
    assert got["slots_exhausted"] is Severity.CRITICAL  # 94 of 97
    assert got["dominant_application"] is Severity.WARNING
    assert got["dominant_application_host"] is Severity.WARNING
    assert got["idle_hoarding"] is Severity.WARNING
    assert got["idle_in_transaction"] is Severity.CRITICAL
    assert got["lock_chain_idle_root"] is Severity.CRITICAL
    assert found[0].severity is Severity.CRITICAL
    assert [f.severity for f in found] == sorted((f.severity for f in found), reverse=True)
    slots = next(f for f in found if f.code == "slots_exhausted")
    assert "94 of 97 usable" in slots.title
    dom = next(f for f in found if f.code == "dominant_application_host")
    assert dom.data == {"application_name": "shop-web", "client_addr": "10.0.0.5", "count": 94,
                        "idle": 80, "states": {"idle": 80, "idle in transaction": 8,
                                               "active": 6}}
    chain = next(f for f in found if f.code == "lock_chain_idle_root")
    assert chain.data["root_pid"] == 100
    assert chain.data["blocked_pids"] == [101, 102, 103, 104, 105, 106]


def test_nearly_full_is_a_warning() -> None:
    got = codes(diagnose(attribute(snapshot([group("a", "active", 40, state_age=0.0),
                                             group("b", "active", 42, addr="x",
                                                   state_age=0.0)]))))
    assert got["slots_high"] is Severity.WARNING
    assert "dominant_application" not in got


def test_saturated_pool_and_churn() -> None:
    snap = snapshot([group("api", "active", 12, state_age=1.0, xact_age=1.0, young=25)])
    got = codes(diagnose(attribute(snap)))
    assert got["pool_saturated"] is Severity.WARNING
    assert got["connection_churn"] is Severity.WARNING


def test_limits_settings_unnamed_and_privileges() -> None:
    settings = tuple(s if s.name != "statement_timeout" else Setting(s.name, 0, "s")
                     for s in SETTINGS)
    snap = snapshot([group(c.UNSET_APPLICATION, count=2, addr="10.1.1.1"),
                     group(state=c.HIDDEN, addr=c.HIDDEN, count=4)],
                    settings=settings,
                    limits=(ConnectionLimit("role", "shop_app", 10, 10),
                            ConnectionLimit("database", "shop", 100, 50)))
    found = diagnose(attribute(snap))
    got = codes(found)
    assert got["connection_limit"] is Severity.CRITICAL
    assert [f.data["name"] for f in found if f.code == "connection_limit"] == ["shop_app"]
    assert got["no_statement_timeout"] is Severity.INFO
    assert "no_idle_in_transaction_session_timeout" not in got
    assert got["no_application_name"] is Severity.INFO
    assert got["insufficient_privilege"] is Severity.WARNING
    assert next(f for f in found if f.code == "insufficient_privilege").data == {"hidden": 4}


def test_thresholds_are_configurable() -> None:
    snap = snapshot([group("shop-web", "idle", 12, state_age=30.0)])
    assert "idle_hoarding" not in codes(diagnose(attribute(snap)))
    assert "idle_hoarding" in codes(diagnose(attribute(snap), Thresholds(idle_hoard_age=20.0)))


def test_text_output_cannot_be_driven_by_control_characters() -> None:
    evil = "web\x1b[2J\nfake line\r"
    snap = snapshot([group(evil, "idle", 80, state_age=999.0)])
    a = attribute(snap)
    out = text(Report("db1", a, tuple(diagnose(a))))
    assert "\x1b" not in out and "\r" not in out
    assert "web\\x1b[2J\\nfake line\\r" in out
    assert as_dict(Report("db1", a, ()))["holders"][0]["application_name"] == evil
    assert safe("plain") == "plain"
