"""Fuzzing: the config parser and the pure attribution/points steps.

Config: ``agent.config.parse`` on arbitrary TOML-shaped documents and ``agent.config.load`` on
arbitrary files (text, near-TOML fragments, raw bytes). Every outcome is a Config that honours
its invariants or a ``ConfigError`` whose message is one printable line naming the source, that
never echoes a connection string's password. Never another exception.

Attribution: ``attribute`` and ``points`` on arbitrary snapshots (colliding hostile names, NULL
names, lock cycles, unknown blockers). Never a crash; every cap holds; counts are conserved; the
folded count is exactly what the caps folded; every point carries exactly the contract's
attribute names; values survive the Prometheus exposition (prometheus_client writes, its
parser reads back) and the diagnose renderers (text printable, JSON exact).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families
from snapshots import snapshot

from agent import config as cfg
from agent import contract as c
from agent.aggregate.attribution import attribute, project
from agent.aggregate.points import points
from agent.collect.snapshot import (
    ActivityGroup,
    ConnectionLimit,
    DatabaseSessions,
    LockWait,
    Session,
    Setting,
    WaitCount,
)
from agent.diagnose import render
from agent.diagnose.findings import diagnose
from agent.errors import ConfigError
from agent.export.producer import Producer
from agent.export.state import MetricsState
from agent.export.text import render as render_metrics
from agent.spec import DIAGNOSE_THRESHOLDS

SECRET = "hunter2-s3cret"
FUZZ = settings(max_examples=int(os.environ.get("PGCONN_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def no_agent_env() -> Iterator[None]:
    """``load`` merges PGCONN_AGENT_* variables: keep the developer's environment out."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PGCONN_AGENT_")}
    try:
        yield
    finally:
        os.environ.update(saved)


def assert_clean_rejection(exc: ConfigError, source: str) -> None:
    message = str(exc)
    assert message, "empty error message"
    assert message.isprintable(), f"error message is not one printable line: {message!r}"
    assert message.startswith(render.safe(source) + ": "), message
    assert SECRET not in message, f"password echoed: {message!r}"


# -- the config parser ------------------------------------------------------------------------

scalars = st.one_of(
    st.text(max_size=12), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.datetimes(), st.dates(), st.times())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
PLAUSIBLE = st.sampled_from([
    "host=127.0.0.1 port=5432", "nonsense", "", "grpc", "http/protobuf", "json", "text",
    "DEBUG", "info", "127.0.0.1:9188", ":0",
    "[::1]:9188", "host:99999", "db1", "a b", "x" * 65, "ok\n", "/run/pw", "../x", "..",
    ["datname", "state"], ["client_addr"], [], ["nope"], [1], 0, 1, 2, -1, 0.001, 86400, 86401,
    1e300, math.inf, -math.inf, math.nan, True, {"authorization": "Bearer x"}, {"k": 1},
])
AGENT_KEYS = ("interval", "max_groups", "dimensions", "show_queries", "listen", "log_format",
              "log_level")
OTLP_KEYS = ("enabled", "endpoint", "protocol", "headers", "certificate", "insecure",
             "export_interval")
TARGET_KEYS = ("name", "dsn", "password_file", "password_credential", "interval")
THRESHOLD_KEYS = tuple(t.name for t in DIAGNOSE_THRESHOLDS)


DSNS = st.sampled_from([f"host=db user=agent password={SECRET}", f"password={SECRET} nonsense",
                        f"postgresql://agent:{SECRET}@db:5432/app", f"host='{SECRET}",
                        f"postgresql://agent:{SECRET}@[db/x"]) | values.map(
    lambda v: [f"password={SECRET}", v])
"""Connection strings with a password, valid or not, or of the wrong type: never echoed."""


def table(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6),
                           PLAUSIBLE | values, max_size=5)


target_tables = st.builds(lambda t, dsn: {**t, "dsn": dsn} if dsn is not None else t,
                          table(tuple(k for k in TARGET_KEYS if k != "dsn")),
                          st.none() | DSNS | PLAUSIBLE)


documents = st.one_of(
    st.fixed_dictionaries({}, optional={
        "agent": table(AGENT_KEYS), "otlp": table(OTLP_KEYS),
        "thresholds": table(THRESHOLD_KEYS),
        "targets": st.lists(target_tables | values, max_size=3),
        "\n\x1b[31m": values}),
    st.dictionaries(st.text(max_size=8), values, max_size=4),
)


def check_config(config: cfg.Config) -> None:
    assert config.max_groups >= 2
    assert 0 < config.interval <= cfg.MAX_INTERVAL
    assert set(config.dimensions) <= set(c.GROUP_DIMENSIONS)
    assert config.log_format in ("text", "json")
    names = [t.name for t in config.targets]
    assert len(names) == len(set(names))
    for target in config.targets:
        assert cfg._TARGET_NAME.fullmatch(target.name), target.name
        assert 0 < target.interval <= cfg.MAX_INTERVAL
        assert SECRET not in target.redacted_dsn
    for threshold, value in config.thresholds.items():
        assert math.isfinite(value) and value > 0, (threshold.name, value)
    if config.otlp.export_interval is not None:
        assert 0 < config.otlp.export_interval <= cfg.MAX_INTERVAL


@FUZZ
@given(documents)
def test_parse_accepts_or_rejects_cleanly(document: dict[str, Any]) -> None:
    try:
        config = cfg.parse(document, "fuzz.toml")
    except ConfigError as exc:
        assert_clean_rejection(exc, "fuzz.toml")
    else:
        check_config(config)


FRAGMENTS = st.sampled_from([
    "[agent]\n", "[otlp]\n", "[thresholds]\n", "[[targets]]\n", "[otlp.headers]\n",
    "interval = ", "max_groups = ", "dimensions = ", "listen = ", "dsn = ", "name = ",
    "export_interval = ", "log_level = ", "headers = ", '"host=127.0.0.1"',
    f"dsn = 'password={SECRET}'\n",
    '"ok"', "'", '"', '"""', "1", "0", "-3", "inf", "nan", "1e400", "true", "1979-05-27",
    "[", "]", "{", "}", ",", "=", ".", " ", "\n", "\t", "#", "\\", "\\u0000", "\x00", "\x1b",
    '"a\\nb" = 1\n', "é", "\ufeff", "\r\n",
])
toml_texts = st.one_of(st.lists(FRAGMENTS, max_size=24).map("".join), st.text(max_size=200))


@FUZZ
@given(text=toml_texts)
def test_load_any_text_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    with no_agent_env():
        try:
            config = cfg.load(path)
        except ConfigError as exc:
            assert_clean_rejection(exc, str(path))
        else:
            check_config(config)


@FUZZ
@given(data=st.binary(max_size=120))
def test_load_any_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    with no_agent_env():
        try:
            check_config(cfg.load(path))
        except ConfigError as exc:
            assert_clean_rejection(exc, str(path))


@pytest.mark.parametrize("text, expected", [
    (b"\xff\xfe = 1", "not UTF-8 text"),
    (b"a = " + b"[" * 100_000, "nested too deeply"),
    (b'[agent]\n"x\\ny" = 1\n', "agent.x\\ny: unknown key"),
    (b"[agent]\ninterval = inf\n", "agent.interval: expected a number <= 86400, found inf"),
    (b"[agent]\ninterval = 1e300\n", "agent.interval: expected a number <= 86400"),
    (b"[otlp]\nexport_interval = nan\n", "otlp.export_interval: expected a number > 0"),
    (b"[[targets]]\ndsn = 'host=x'\nname = \"db\\n\"\n", "targets[0].name: expected 1-64"),
    (f"[[targets]]\ndsn = ['password={SECRET}']\n".encode(), "targets[0].dsn: expected str"),
])
def test_known_hostile_files(tmp_path: Path, text: bytes, expected: str) -> None:
    """Found by the fuzzers above (each once crashed, printed two lines or echoed a secret)."""
    path = tmp_path / "c.toml"
    path.write_bytes(text)
    with no_agent_env(), pytest.raises(ConfigError) as info:
        cfg.load(path)
    assert expected in str(info.value)
    assert_clean_rejection(info.value, str(path))


# -- attribution and points -------------------------------------------------------------------

NAMES = st.sampled_from(["shop-web", "billing", "", 'a"} 1\nfake_metric{', "\x1b[2J", "é" * 31,
                         "\\", "(unset)", c.OVERFLOW_VALUE, c.HIDDEN]) | st.text(max_size=6)
AGES = st.none() | st.floats(min_value=0, max_value=1e7)
STATES = st.sampled_from(["idle", "active", "idle in transaction",
                          "idle in transaction (aborted)", c.HIDDEN, "fastpath function call"])
PIDS = st.integers(min_value=1, max_value=40)

groups_st = st.lists(st.builds(
    ActivityGroup, datname=st.none() | NAMES, usename=st.none() | NAMES, application_name=NAMES,
    client_addr=st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", c.LOCAL_CLIENT, c.HIDDEN])
    | NAMES, state=STATES, count=st.integers(1, 5000), max_state_age=AGES, max_xact_age=AGES,
    opened=st.integers(0, 100), young=st.integers(0, 100)), max_size=40)


@st.composite
def sessions_st(draw: st.DrawFn) -> tuple[Session, ...]:
    pids = draw(st.lists(PIDS, unique=True, max_size=12))
    out = []
    for pid in pids:
        blocking = draw(st.lists(PIDS, unique=True, max_size=3))  # unknown pids, cycles, self
        out.append(Session(
            pid=pid, datname=draw(st.none() | NAMES), usename=draw(st.none() | NAMES),
            application_name=draw(NAMES), client_addr=draw(NAMES), client_hostname=None,
            backend_type="client backend", state=draw(STATES), backend_start=None,
            xact_start=None, query_start=None, state_change=None,
            wait_event_type="Lock" if blocking else None,
            wait_event="transactionid" if blocking else None, blocking_pids=tuple(blocking),
            state_age=draw(AGES), xact_age=draw(AGES), locks_held=draw(st.integers(0, 9)),
            query=draw(st.none() | NAMES)))
    return tuple(out)


waits_st = st.lists(st.builds(WaitCount, datname=st.none() | NAMES, usename=st.none() | NAMES,
                              application_name=NAMES, wait_event_type=NAMES, wait_event=NAMES,
                              count=st.integers(1, 100)), max_size=12)
lock_waits_st = st.lists(st.builds(LockWait, pid=PIDS, locktype=NAMES, mode=NAMES,
                                   relation=st.none() | NAMES, waitstart=st.none(),
                                   wait_age=AGES), max_size=10)
settings_st = st.sampled_from([
    (), (Setting("max_connections", 100, ""), Setting("superuser_reserved_connections", 3, "")),
    (Setting("max_connections", 2, ""), Setting("superuser_reserved_connections", 5, "")),
    (Setting("max_connections", 10, ""), Setting("idle_in_transaction_session_timeout", 0, "s"),
     Setting("statement_timeout", 0, "s")),
])
dims_st = st.lists(st.sampled_from(c.GROUP_DIMENSIONS), unique=True).map(
    lambda ds: tuple(d for d in c.GROUP_DIMENSIONS if d in ds))


@st.composite
def snapshots_st(draw: st.DrawFn) -> Any:
    return snapshot(
        draw(groups_st), settings=draw(settings_st), sessions=draw(sessions_st()),
        waits=tuple(draw(waits_st)), lock_waits=tuple(draw(lock_waits_st)),
        limits=tuple(draw(st.lists(st.builds(ConnectionLimit, scope=st.sampled_from(
            ["role", "database"]), name=NAMES, limit=st.integers(0, 100),
            current=st.integers(0, 100)), max_size=3,
            unique_by=lambda lim: (lim.scope, lim.name)))),
        databases=tuple(draw(st.lists(st.builds(
            DatabaseSessions, datname=NAMES, sessions=st.integers(0, 10**12),
            sessions_abandoned=st.integers(0, 10), sessions_fatal=st.integers(0, 10),
            sessions_killed=st.integers(0, 10)), max_size=3, unique_by=lambda d: d.datname))),
        target=draw(st.sampled_from(["db1", "127.0.0.1:5432/app", "x@y/z"])))


def folded_by_cap(distinct: int, limit: int) -> int:
    return distinct - (limit - 1) if distinct > limit else 0


GROUP_KEYED = (c.CONNECTION_COUNT, c.STATE_AGE_MAX, c.TRANSACTION_AGE_MAX, c.LOCK_BLOCKING,
               c.CONNECTION_WAITING)


@FUZZ
@given(snap=snapshots_st(), dims=dims_st, max_groups=st.integers(2, 8))
def test_attribution_and_points_hold_their_invariants(snap: Any, dims: tuple[str, ...],
                                                      max_groups: int) -> None:
    a = attribute(snap, dimensions=dims, max_groups=max_groups)
    total = sum(g.count for g in snap.groups)
    # groups: capped, conserved, keys unique and as wide as the dimensions
    assert len(a.groups) <= max_groups
    assert sum(g.count for g in a.groups) == total == a.client_backends
    assert len({g.key for g in a.groups}) == len(a.groups)
    assert all(len(g.key) == len(dims) for g in a.groups)
    assert sum(g.opened for g in a.groups) == sum(g.opened for g in snap.groups)
    assert a.hidden == sum(g.count for g in snap.groups if g.state == c.HIDDEN)
    # waits and blockers: capped and conserved
    assert len(a.waits) <= max_groups
    assert sum(w.count for w in a.waits) == sum(w.count for w in snap.waits)
    assert len(a.blocking) <= max_groups
    by_pid = {s.pid: s for s in snap.sessions}

    def blocker_key(pid: int) -> tuple[str, ...]:
        return project(by_pid[pid], dims) if pid in by_pid else (c.HIDDEN,) * len(dims)

    blocked_per_group: dict[tuple[str, ...], set[int]] = {}
    for s in snap.sessions:
        for p in s.blocking_pids:
            blocked_per_group.setdefault(blocker_key(p), set()).add(s.pid)
    # per blocker group, the distinct sessions it blocks directly; folding adds them up
    assert sum(n for _, n in a.blocking) == sum(len(v) for v in blocked_per_group.values())
    # the folded count is exactly what the three caps folded
    wait_keys = {(w.datname or "", w.usename or "", w.application_name, w.wait_event_type,
                  w.wait_event) for w in snap.waits}
    blocker_keys = set(blocked_per_group)
    assert a.folded == (folded_by_cap(len({project(g, dims) for g in snap.groups}), max_groups)
                        + folded_by_cap(len(wait_keys), max_groups)
                        + folded_by_cap(len(blocker_keys), max_groups))
    for chain in a.chains:
        assert chain.root_pid not in chain.blocked_pids

    ps = points(a, max_groups=max_groups)
    dropped = set(c.GROUP_DIMENSIONS) - set(dims)
    for spec in c.METRICS:
        expected_names = tuple(n for n in spec.attribute_names(dims) if n not in dropped)
        pts = ps.opened if spec is c.CONNECTION_OPENED else ps.points[spec.name]
        for attrs, value in pts:
            assert tuple(k for k, _ in attrs) == expected_names, (spec.name, attrs)
            assert all(isinstance(v, str) for _, v in attrs)
            assert math.isfinite(value)
        assert len({attrs for attrs, _ in pts}) == len(pts), f"{spec.name}: duplicate series"
        if spec in GROUP_KEYED:
            assert len(pts) <= max_groups, spec.name
    assert sum(v for _, v in ps.points[c.CONNECTION_COUNT.name]) == total
    assert len(ps.opened) <= max_groups
    assert sum(v for _, v in ps.opened) == sum(g.opened for g in snap.groups)
    assert ps.points[c.GROUPS_FOLDED.name] == [((("target", snap.target),), float(a.folded))]

    # the diagnose renderers: printable text, exact JSON
    report = render.Report(snap.target, a, tuple(diagnose(a)),
                           {s.pid: s.query for s in snap.sessions if s.query is not None})
    text = render.text(report)
    assert all(line.isprintable() for line in text.split("\n")), text
    doc = json.loads(render.as_json([report]))["targets"][0]
    assert doc["slots"]["client_backends"] == total
    for holder in doc["holders"]:
        assert all(isinstance(holder[k], str) for k in ("application_name", "usename"))
    assert set(doc.get("queries", {}).values()) <= {s.query for s in snap.sessions}


_STATE = MetricsState(max_groups=1000)
_PRODUCER = Producer(_STATE, Resource.create())


def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    text = render_metrics(_PRODUCER).decode("utf-8")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def order(sample: tuple[dict[str, str], float]) -> tuple[Any, ...]:
    return (sorted(sample[0].items()), sample[1])


@FUZZ
@given(snap=snapshots_st(), dims=dims_st)
def test_any_label_value_survives_the_prometheus_exposition(snap: Any,
                                                            dims: tuple[str, ...]) -> None:
    """What /metrics serves (prometheus_client's exposition of the OpenTelemetry data), parsed
    back, gives exactly the points: no injected series, no mangled value."""
    a = attribute(snap, dimensions=dims, max_groups=50)
    ps = points(a, max_groups=50)
    for attrs, _ in _STATE.observe(c.AGENT_UP.name):  # every target published before
        _STATE.remove(dict(attrs)["target"])
    _STATE.publish(snap.target, ps)
    scraped = scrape()
    for spec in (c.CONNECTION_COUNT, c.CONNECTION_WAITING, c.LOCK_BLOCKING, c.CONNECTION_LIMIT,
                 c.SESSIONS, c.BACKEND_COUNT):
        sample = spec.prometheus_name
        expected = sorted(((dict(attrs), v) for attrs, v in ps.points[spec.name]), key=order)
        got = sorted(scraped.get(sample, []), key=order)
        assert expected == got, spec.name
    known = {s.prometheus_name for s in c.METRICS} | {
        s.prometheus_name.removesuffix("_total") + suffix for s in c.METRICS
        for suffix in ("_created", "_bucket", "_sum", "_count")}
    assert set(scraped) <= known, set(scraped) - known


def test_dropping_datname_merges_rows_instead_of_losing_them() -> None:
    """Found by the exposition fuzzer: with ``datname`` configured out, two databases' session
    counters (and waits) had the same attributes and the instrument kept only one of them."""
    snap = snapshot([], databases=(DatabaseSessions("a", 5, 1, 0, 0),
                                   DatabaseSessions("b", 7, 0, 2, 0)),
                    waits=(WaitCount("a", "u", "app", "Lock", "relation", 2),
                           WaitCount("b", "u", "app", "Lock", "relation", 3)))
    dims = ("usename", "application_name", "client_addr", "state")
    ps = points(attribute(snap, dimensions=dims)).points
    sessions = {dict(attrs)["outcome"]: v for attrs, v in ps[c.SESSIONS.name]}
    assert sessions == {"all": 12.0, "abandoned": 1.0, "fatal": 2.0, "killed": 0.0}
    assert [v for _, v in ps[c.CONNECTION_WAITING.name]] == [5.0]
