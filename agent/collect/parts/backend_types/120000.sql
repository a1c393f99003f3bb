-- Every backend by type (PostgreSQL 12+; backend_type exists since 10).
SELECT coalesce(backend_type, 'unknown') AS backend_type, count(*)::int AS count
FROM pg_stat_activity
GROUP BY 1
