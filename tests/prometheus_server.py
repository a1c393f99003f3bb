"""Debian's Prometheus as a throwaway process for the tests (installed by scripts/setup.sh).

One class for every test that needs a real Prometheus: an empty one that only parses and
evaluates PromQL, one scraping the agent, one also evaluating a rule file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_e2e import wait_until

from agent.demo.server import free_port

PROMETHEUS = os.environ.get("PGCONN_PROMETHEUS", "/usr/bin/prometheus")
JOB = "pgconn-agent"
RULES = "pgconn-agent.rules.yml"

Result = list[tuple[dict[str, str], float]]


class Prometheus:
    """Prometheus in a temporary directory: scrapes ``scrape_targets`` (job ``pgconn-agent``)
    and evaluates ``rules`` (a rule file's text) every ``interval``; ``stop()`` removes it."""

    def __init__(self, scrape_targets: list[str] | None = None, *, rules: str | None = None,
                 interval: str = "1s", ready_timeout: float = 60) -> None:
        if not os.access(PROMETHEUS, os.X_OK):
            pytest.fail(f"{PROMETHEUS} is missing: run scripts/setup.sh (apt package "
                        f"'prometheus')", pytrace=False)
        self.tmp = Path(tempfile.mkdtemp(prefix="pgconn-prom-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {"global": {"scrape_interval": interval,
                                             "scrape_timeout": interval,
                                             "evaluation_interval": interval}}
        if rules is not None:
            (self.tmp / RULES).write_text(rules, encoding="utf-8")
            config["rule_files"] = [RULES]
        if scrape_targets:
            config["scrape_configs"] = [{"job_name": JOB,
                                         "static_configs": [{"targets": scrape_targets}]}]
        # JSON is YAML: no hand-built indentation.
        (self.tmp / "prometheus.yml").write_text(json.dumps(config, indent=1), encoding="utf-8")
        self._log = (self.tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n"
                            f"{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def _answer(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:  # a bad query: the answer says why
            return dict(json.loads(exc.read()))

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful /api/v1/``path`` answer (asserts the success)."""
        answer = self._answer(path, params)
        assert answer.get("status") == "success", answer
        return answer["data"]

    def raw_query(self, expr: str) -> dict[str, Any]:
        """The /api/v1/query answer (status, data or errorType/error), errors included."""
        return self._answer("query", {"query": expr})

    def query(self, expr: str) -> Result:
        """An instant vector query's samples as (labels, value); asserts the success."""
        return [(r["metric"], float(r["value"][1]))
                for r in self.api("query", query=expr)["result"]]

    def until(self, expr: str, check: Callable[[Result], Any], timeout: float = 20.0) -> Result:
        """Re-run ``expr`` until it returns samples and ``check(result)`` holds; the result."""
        result: Result = []

        def ok() -> bool:
            nonlocal result
            result = self.query(expr)
            return bool(result) and bool(check(result))

        try:
            wait_until(ok, timeout, expr, every=0.25)
        except TimeoutError:
            pytest.fail(f"PromQL {expr!r}: got {result}")
        return result

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def log_text(self) -> str:
        self._log.flush()
        return (self.tmp / "prometheus.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
