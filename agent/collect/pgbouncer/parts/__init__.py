"""PgBouncer's console parts, one folder each (see ``agent.collect.part.ConsolePart``)."""
