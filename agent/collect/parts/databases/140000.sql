-- Session outcome counters of pg_stat_database (PostgreSQL 14+; absent before).
SELECT datname::text,
       sessions::bigint,
       sessions_abandoned::bigint,
       sessions_fatal::bigint,
       sessions_killed::bigint
FROM pg_stat_database
WHERE datname IS NOT NULL
