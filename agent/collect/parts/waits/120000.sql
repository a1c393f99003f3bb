-- Active client sessions that are waiting, by wait event (PostgreSQL 12+).
-- Idle sessions always "wait" on ClientRead; only active ones are interesting.
SELECT datname,
       usename,
       coalesce(nullif(application_name, ''), %(unset)s) AS application_name,
       wait_event_type,
       wait_event,
       count(*)::int AS count
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'active' AND wait_event IS NOT NULL
GROUP BY 1, 2, 3, 4, 5
