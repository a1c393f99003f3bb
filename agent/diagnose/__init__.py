"""Diagnose: findings in words for a person, with the evidence (pure), and their rendering."""
