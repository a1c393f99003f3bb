"""YAML output of the rules: readable folding for prose, never for PromQL."""

from __future__ import annotations

from typing import Any

import yaml

WIDTH = 100


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


class Prose(str):
    """An annotation: long ones are folded (``>-``) so the file stays readable."""


class Code(str):
    """A PromQL expression: never folded, so Helm actions in it stay on one line."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _prose(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = ">" if len(data) > WIDTH - 20 and "\n" not in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style=style)


def _code(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data or "{{" in data or len(data) > WIDTH - 20 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style=style)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(Code, _code)
_Dumper.add_representer(Prose, _prose)


def dump(data: Any, width: int = WIDTH) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=width, allow_unicode=True,
                     default_flow_style=False)
