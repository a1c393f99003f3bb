-- Connection-relevant settings with their units, normalised in Python (PostgreSQL 12+).
-- reset_val: the session default, unaffected by the agent's own SET LOCAL timeouts.
SELECT name, reset_val AS setting, coalesce(unit, '') AS unit
FROM pg_settings
WHERE name = ANY(%(setting_names)s)
