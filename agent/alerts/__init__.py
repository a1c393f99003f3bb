"""The alert rules in parts: settings, PromQL and annotation helpers, one module per family.

``agent/alert_rules.py`` is the public surface; it renders these parts through a dialect
(plain rule file or Helm template).
"""
