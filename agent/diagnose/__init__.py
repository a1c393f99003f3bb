"""Diagnose: findings in words for a person, with the evidence (pure), and their rendering."""

from . import findings  # noqa: F401 (loads the rules before the rule modules that findings lists)
