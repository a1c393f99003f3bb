"""The collection parts, one folder each (see ``agent.collect.part``); found, not listed."""
