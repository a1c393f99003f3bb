"""Dialects: how the alerts' tokens become text in the plain rule file and in the Helm template.

The settings (selector, grouping labels, runbook base) and the thresholds enter the rules here
and nowhere else: the plain dialect writes their values, the Helm one ``.Values`` lookups.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .rule import METRICS, Alert
from .settings import Settings, duration, number
from .yaml_text import Code, Prose

_TOKEN = re.compile(r"<T>|<J>|<GF>|<GA>")
_METRIC_REF = re.compile(r"@(\w+)@(?:\{([^}]*)\})?")
_THRESHOLD_REF = re.compile(r"\[\[(\w+)\]\]")


@dataclass(frozen=True, slots=True)
class Dialect:
    """Token expansions; ``literal`` makes annotation text survive the output's templating."""

    tokens: Mapping[str, str]
    threshold: Callable[[str], str]
    for_: Callable[[str], str]
    selector: Callable[[str], str]  # the matchers of a metric reference, selector joined
    runbook_base: str
    literal: Callable[[str], str] = field(default=lambda s: s)

    def expr(self, text: str) -> str:
        text = _METRIC_REF.sub(lambda m: METRICS[m.group(1)] + self.selector(m.group(2) or ""),
                               text)
        text = _THRESHOLD_REF.sub(lambda m: self.threshold(m.group(1)), text)
        return _TOKEN.sub(lambda m: self.tokens[m.group(0)], text)

    def annotation(self, text: str) -> str:
        text = _METRIC_REF.sub(lambda m: METRICS[m.group(1)] + (
            "{" + m.group(2) + "}" if m.group(2) is not None else ""), text)
        parts = _TOKEN.split(text)
        tokens = _TOKEN.findall(text)
        out = self.literal(parts[0])
        for token, part in zip(tokens, parts[1:], strict=True):
            out += self.tokens[token] + self.literal(part)
        return out

    def rule(self, a: Alert) -> dict[str, Any]:
        """One entry of a group's ``rules:`` list."""
        return {
            "alert": a.name,
            "expr": Code(self.expr(a.expr)),
            "for": self.for_(a.for_),
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": Prose(self.annotation(a.summary)),
                "description": Prose(self.annotation(a.description)),
                "runbook_url": f"{self.runbook_base}#{a.name.lower()}",
            },
        }

    def groups(self, alerts: Iterable[Alert]) -> list[dict[str, Any]]:
        """The ``groups:`` list, groups in the order their first alert comes."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for a in alerts:
            groups.setdefault(a.group, []).append(self.rule(a))
        return [{"name": name, "rules": rules} for name, rules in groups.items()]


def plain(values: Mapping[str, float], settings: Settings) -> Dialect:
    """The rule file: thresholds and settings written in."""
    g = settings.group_by
    job = tuple(dict.fromkeys((*g, "job", "instance")))

    def selector(matchers: str) -> str:
        joined = ",".join(m for m in (matchers, settings.selector.strip()) if m)
        return "{" + joined + "}" if joined else ""

    return Dialect(
        tokens={"<T>": ", ".join((*g, "target")), "<J>": ", ".join(job),
                "<GF>": "".join(f",{label}=%q" for label in g),
                "<GA>": "".join(f" $labels.{label}" for label in g)},
        threshold=lambda n: number(values[n]), for_=lambda n: duration(values[n]),
        selector=selector, runbook_base=settings.runbook_base)


def helm(path: str) -> Dialect:
    """The Helm template: thresholds and settings read from ``path`` (``.Values.alerts``)."""
    g = f"{path}.groupBy"

    def selector(matchers: str) -> str:
        if matchers:
            return "{" + matchers + "{{ with " + path + ".selector }},{{ . }}{{ end }}}"
        return "{{ with " + path + '.selector }}{{ printf "{%s}" . }}{{ end }}'

    return Dialect(
        tokens={"<T>": "{{ range " + g + " }}{{ . }}, {{ end }}target",
                "<J>": "{{ range " + g + ' }}{{ if not (has . (list "job" "instance")) }}'
                       "{{ . }}, {{ end }}{{ end }}job, instance",
                "<GF>": "{{ range " + g + " }},{{ . }}=%q{{ end }}",
                "<GA>": "{{ range " + g + " }} $labels.{{ . }}{{ end }}"},
        threshold=lambda n: "{{ " + path + ".thresholds." + n + " }}",
        for_=lambda n: "{{ " + path + ".thresholds." + n + " }}s",
        selector=selector, runbook_base="{{ " + path + ".runbookBase }}",
        literal=helm_escape)


def helm_escape(text: str) -> str:
    """Prometheus template text made literal for Helm: ``{{`` ... ``}}`` raw-string actions."""
    if "{{" not in text and "}}" not in text:
        return text
    if "`" in text:
        raise ValueError(f"annotation text: a Helm raw string cannot hold a backtick, "
                         f"found {text!r}")
    return "{{`" + text + "`}}"
