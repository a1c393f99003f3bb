"""Each diagnosis rule on hand-built attributions: it fires on its situation, quiet otherwise."""

from __future__ import annotations

from snapshots import SETTINGS, ConnectionLimit, WaitCount, group, session, snapshot

from agent import contract as c
from agent import spec
from agent.aggregate.attribution import attribute
from agent.collect.snapshot import ActiveStatements, Setting, TopStatement
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


def test_pool_full_with_one_user_reads_as_one_finding_per_holder() -> None:
    snap = snapshot([
        group("shop-web", "idle", 80, state_age=300.0),
        group("shop-web", "idle in transaction", 8, state_age=400.0, xact_age=410.0),
        group("shop-web", "active", 6, state_age=100.0, xact_age=100.0),
    ], sessions=(session(100, state="idle in transaction", state_age=400.0, xact_age=410.0),
                 *(session(101 + i, blocking=(100,)) for i in range(6))))
    found = diagnose(attribute(snap))
    assert [f.code for f in found] == ["idle_in_transaction", "slots_exhausted",
                                       "lock_chain_idle_root"]
    assert all(f.severity is Severity.CRITICAL for f in found)
    shop = found[0]
    # The count is the groups' (8); one session was read row by row, the rest is said.
    assert shop.title.startswith("shop-web leaves 8 transactions idle (longest 6m40s)")
    assert any(e.startswith("7 more idle in transaction") for e in shop.evidence)
    assert shop.data["causes"] == ["idle_in_transaction", "idle_hoarding",
                                   "dominant_application"]
    assert shop.data["count"] == 94 and shop.data["idle"] == 80
    assert shop.evidence[0].startswith("holds 94 of 97 usable slots: 80 idle, 8 idle in "
                                       "transaction, 6 active; from 10.0.0.5")
    assert any("also keeps 80 connections idle" in e for e in shop.evidence)
    assert sum("shop-web" in f.title for f in found) == 1
    assert "94 of 97 usable" in found[1].title
    chain = found[2]
    assert chain.data["root_pid"] == 100
    assert chain.data["blocked_pids"] == [101, 102, 103, 104, 105, 106]
    advice = [f.recommendation for f in found]
    assert sum(a.count("idle_in_transaction_session_timeout") for a in advice) == 1


def test_findings_come_most_severe_first() -> None:
    snap = snapshot([group("shop-web", "idle", 80, state_age=300.0),
                     group("(unset)", "idle", 2, state_age=5.0)])
    found = diagnose(attribute(snap))
    assert len({f.severity for f in found}) >= 2, [f.code for f in found]
    assert [f.severity for f in found] == sorted((f.severity for f in found), reverse=True)


def test_unknown_states_are_not_zero() -> None:
    snap = snapshot([group("shop-web", c.HIDDEN, 90, addr=c.HIDDEN, state_age=None)])
    a = attribute(snap)
    found = diagnose(a)
    shop = next(f for f in found if f.code == "dominant_application")
    assert shop.data["idle"] is None
    assert "0 idle" not in " ".join(shop.evidence)
    assert "90 of unknown state" in shop.evidence[0]
    out = text(Report("db1", a, tuple(found)))
    row = next(line for line in out.splitlines() if line.startswith("shop-web"))
    assert row.split()[-4:] == ["?", "?", "?", "?"]


def test_nearly_full_is_a_warning() -> None:
    got = codes(diagnose(attribute(snapshot([group("a", "active", 40, state_age=0.0),
                                             group("b", "active", 42, addr="x",
                                                   state_age=0.0)]))))
    assert got["slots_high"] is Severity.WARNING
    assert "dominant_application" not in got


def test_saturated_pool_and_a_young_crowd_without_a_rate() -> None:
    snap = snapshot([group("api", "active", 12, state_age=1.0, xact_age=1.0, young=25)],
                    waits=(WaitCount("shop", "shop_app", "api", "Lock", "transactionid", 8),),
                    statements=(ActiveStatements("api", 12, 75.0, 9.0, 8, (
                        TopStatement("UPDATE t SET v = ? WHERE id = ?", 42, 9),)),))
    found = diagnose(attribute(snap))
    assert [f.code for f in found] == ["pool_saturated"]
    evidence = " ".join(found[0].evidence)
    assert "12 active: 8 waiting (8 Lock/transactionid), 4 running; 8 blocked" in evidence
    assert "statement age: oldest 75s, median 9s over its 12 active sessions" in evidence
    assert "9x UPDATE t SET v = ? WHERE id = ? (query_id 42)" in evidence
    assert "25 of its connections were opened in the last minute" in evidence
    assert "churn" not in found[0].title + evidence and "retry" not in evidence


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
    shorter = Thresholds({spec.IDLE_HOARD_AGE: 20.0})
    assert "idle_hoarding" in codes(diagnose(attribute(snap), shorter))


def test_text_output_cannot_be_driven_by_control_characters() -> None:
    evil = "web\x1b[2J\nfake line\r"
    snap = snapshot([group(evil, "idle", 80, state_age=999.0)])
    a = attribute(snap)
    out = text(Report("db1", a, tuple(diagnose(a))))
    assert "\x1b" not in out and "\r" not in out
    assert "web\\x1b[2J\\nfake line\\r" in out
    assert as_dict(Report("db1", a, ()))["holders"][0]["application_name"] == evil
    assert safe("plain") == "plain"
