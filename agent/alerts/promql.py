"""PromQL building blocks shared by the alert families."""

from __future__ import annotations

from .. import spec

IIT = spec.IDLE_IN_TRANSACTION_REGEX
IN_IIT = f'state=~"{IIT}"'
"""Matcher: sessions idle in transaction (aborted or not)."""
IDLE = f'state="{spec.State.IDLE}"'


def unless(expr: str, on: str, condition: str) -> str:
    """``expr`` unless ``condition`` holds for the same ``on`` labels (inhibition in PromQL)."""
    return f"(\n{indent(expr)}\n)\nunless on ({on})\n(\n{indent(condition)}\n)"


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
