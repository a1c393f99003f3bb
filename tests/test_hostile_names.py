"""Hostile names end to end.

Any client chooses its application_name; whoever can create roles or databases chooses their
names, and PostgreSQL allows any character but NUL in a quoted identifier. A real server holds
sessions whose role, database and application names carry quotes, braces, newlines, a
label-injection attempt, terminal escapes and 63-byte multibyte UTF-8; ``pgconn-agent run``
exports them and the test reads them back four ways:

* OTLP (the in-test gRPC receiver): attribute values equal the server's own strings;
* ``/metrics`` parsed by prometheus_client: the same values, no extra series;
* a real Prometheus scraping ``/metrics``: the scrape succeeds and the label values are exact;
* ``diagnose``: text output has no control character (``render.safe`` escapes them), JSON has
  the exact strings.

PostgreSQL 15 itself replaces non-ASCII and control characters in application_name by ``?``
(and cuts it at 63 bytes); the agent must report what the server reports, which the test
checks against ``pg_stat_activity``. Empty application names become ``(unset)``; NULL names
(background sessions, hidden ones) are covered by the fuzz tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from agent_e2e import Agent, wait_until
from diagnose_support import run_diagnose
from otlp_receiver import GrpcReceiver, agent_env, number
from prometheus_server import Prometheus
from psycopg import sql

from agent import contract as c
from agent.demo.server import LocalServer
from agent.demo.workload import Workload
from agent.diagnose.render import safe

INJECTION = 'a"} 1\nfake_metric{'
"""A label-injection attempt: closes the label set, starts a sample and a new series."""
EURO_63 = "€" * 21
"""63 bytes of 3-byte UTF-8: PostgreSQL's NAMEDATALEN - 1, exactly."""
TERMINAL = "evil\x1b]0;pwned\x07\\x\r"
"""Terminal escapes (set the window title, bell), a backslash and a carriage return."""
QUOTES = "o'brien \"q\" {x=\"y\"},"
DB_CONTROL = 'db\x1b[2J\r\n{x="y"}'
"""Clears the screen, then a CR LF and a Prometheus label set."""
CJK_63 = "日本" * 10 + "abc"
LONG_APP = "{" * 70
SESSIONS: list[tuple[str, str, str, int]] = [
    # (application_name sent, role, database, sessions)
    (INJECTION, INJECTION, DB_CONTROL, 1),
    ("q'\\\"{}=,", EURO_63, CJK_63, 2),
    ("", TERMINAL, "postgres", 3),
    (LONG_APP, QUOTES, DB_CONTROL, 4),
    ("\x1b[31mred\u00e9", INJECTION, CJK_63, 5),
]
SHOWN_APP = {INJECTION: 'a"} 1?fake_metric{', "": c.UNSET_APPLICATION, LONG_APP: "{" * 63,
             "\x1b[31mred\u00e9": "?[31mred??"}
"""What PostgreSQL 15 makes of the application names (and the agent's name for none)."""


def expected_groups() -> dict[tuple[str, str, str], float]:
    return {(db, role, SHOWN_APP.get(app, app)): float(n) for app, role, db, n in SESSIONS}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(max_connections=60) as srv:
        for role in {r for _, r, _, _ in SESSIONS}:
            srv.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role))
                        .as_string(None))
        for db in {d for _, _, d, _ in SESSIONS} - {"postgres"}:
            srv.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)).as_string(None))
        yield srv


@pytest.fixture(scope="module")
def held(server: LocalServer) -> Iterator[Workload]:
    with Workload(server.dsn()) as work:
        for app, role, db, n in SESSIONS:
            work.idle(n, app, user=role, dbname=db)
        yield work


@pytest.fixture(scope="module")
def receiver() -> Iterator[GrpcReceiver]:
    with GrpcReceiver() as rec:
        yield rec


@pytest.fixture(scope="module")
def agent(server: LocalServer, held: Workload, receiver: GrpcReceiver) -> Iterator[Agent]:
    with Agent(["--dsn", server.dsn(), "--listen", "127.0.0.1:0", "--interval", "0.3"],
               env=agent_env(receiver, 300)) as proc:
        yield proc.started()


def idle_groups(points: list[tuple[dict[str, Any], float]]) -> dict[tuple[str, str, str], float]:
    out = {}
    for attrs, value in points:
        if attrs.get("state") == "idle":
            assert attrs["client_addr"] == "127.0.0.1", attrs
            out[(attrs["datname"], attrs["usename"], attrs["application_name"])] = value
    return out


def test_the_server_stores_what_the_test_expects(server: LocalServer, held: Workload) -> None:
    """The expectations are the server's own view, not a guess about its sanitising."""
    rows = server.execute("SELECT datname, usename, coalesce(nullif(application_name, ''), "
                          "'(unset)'), count(*) FROM pg_stat_activity WHERE backend_type = "
                          "'client backend' AND pid <> pg_backend_pid() GROUP BY 1, 2, 3")
    assert {(d, u, a): float(n) for d, u, a, n in rows} == expected_groups()
    assert len(EURO_63.encode()) == len(CJK_63.encode()) == 63


def test_otlp_attributes_are_the_exact_names(agent: Agent, receiver: GrpcReceiver) -> None:
    def got() -> dict[tuple[str, str, str], float] | None:
        pts = [(a, number(p)) for a, p in receiver.latest_points(c.CONNECTION_COUNT.name)]
        groups = idle_groups(pts)
        return groups if groups == expected_groups() else None

    receiver.wait_for(got, 20, "the hostile groups over OTLP")
    limits = receiver.latest_points(c.SESSIONS.name)
    assert {a["datname"] for a, _ in limits} >= {DB_CONTROL, CJK_63}


def test_metrics_endpoint_escapes_and_parses_back(agent: Agent) -> None:
    wait_until(lambda: idle_groups([(lab, v) for n, lab, v in agent.samples()
                                    if n == c.CONNECTION_COUNT.prometheus_name])
               == expected_groups(), 20, "the hostile groups on /metrics")
    text = agent.metrics()
    names = {s.prometheus_name.removesuffix("_total") for s in c.METRICS}
    for line in text.split("\n"):  # the format's only line end (a raw CR may be in a value)
        if line.startswith("#") or not line:
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        assert name is not None, line
        base = re.sub(r"_(total|bucket|sum|count|created)$", "", name.group(0))
        assert name.group(0) in names or base in names, f"injected series: {line!r}"
    assert '\\nfake_metric{' in text  # the injection's newline, escaped inside its label


def test_a_real_prometheus_scrapes_the_exact_names(agent: Agent) -> None:
    assert agent.listen
    prometheus = Prometheus([agent.listen])
    try:
        def series() -> dict[tuple[str, str, str], float] | None:
            answer = prometheus.raw_query(f'{c.CONNECTION_COUNT.prometheus_name}{{state="idle"}}')
            result = answer.get("data", {}).get("result", [])
            groups = idle_groups([(r["metric"], float(r["value"][1])) for r in result])
            return groups if groups == expected_groups() else None

        wait_until(series, 30, "Prometheus to hold the hostile series", every=0.5)
        up = prometheus.raw_query('up{job="pgconn-agent"}')["data"]["result"]
        assert [r["value"][1] for r in up] == ["1"], up  # the scrape parsed, as a whole
        fake = prometheus.raw_query('{__name__=~"fake.*|a.*"}')["data"]["result"]
        assert fake == []
    finally:
        prometheus.stop()


def test_diagnose_text_cannot_drive_the_terminal(server: LocalServer, held: Workload) -> None:
    _, text = run_diagnose("--dsn", server.dsn(), "--format", "text")
    for line in text.split("\n"):
        assert line.isprintable(), f"control character reaches the terminal: {line!r}"
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    holders = text.split("Top holders", 1)[1].split("\n\n", 1)[0]
    for name in (INJECTION, TERMINAL, EURO_63, QUOTES, DB_CONTROL, CJK_63):
        assert safe(name) in holders, (name, holders)
    assert safe(INJECTION) == 'a"} 1\\nfake_metric{'
    assert safe(TERMINAL) == "evil\\x1b]0;pwned\\x07\\x\\r"


def test_diagnose_json_has_the_exact_names(server: LocalServer, held: Workload) -> None:
    _, out = run_diagnose("--dsn", server.dsn(), "--format", "json")
    report = json.loads(out)["targets"][0]
    got = {(h["datname"], h["usename"], h["application_name"]): float(h["total"])
           for h in report["holders"] if h["application_name"] != "pgconn-agent"}
    assert got == expected_groups()
