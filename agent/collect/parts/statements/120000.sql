-- What busy sessions do, per application (PostgreSQL 12+): active client backends, their
-- statement age (oldest and median, from query_start) and how many wait on a heavyweight lock.
-- With %(show_queries)s also their most frequent statements (truncated; normalised in Python),
-- otherwise no query text is read. query_id needs PostgreSQL 14+ (see 140000.sql).
WITH active AS (
    SELECT coalesce(nullif(application_name, ''), %(unset)s) AS application_name,
           query_start, wait_event_type,
           CASE WHEN %(show_queries)s THEN left(query, %(query_chars)s) END AS query,
           NULL::bigint AS query_id
    FROM pg_stat_activity
    -- Read only when asked for (%(statements)s: a busy holder was seen): otherwise a
    -- one-time filter skips the part and the poll costs what it did without it.
    WHERE %(statements)s
      AND backend_type = 'client backend' AND state = 'active' AND query_start IS NOT NULL
)
SELECT application_name, count(*)::int AS count,
       greatest(0, date_part('epoch', now() - min(query_start))) AS max_age,
       greatest(0, date_part('epoch', now() - percentile_disc(0.5)
                                              WITHIN GROUP (ORDER BY query_start))) AS median_age,
       (count(*) FILTER (WHERE wait_event_type = 'Lock'))::int AS blocked,
       -- CASE skips the subquery entirely unless query text was asked for.
       CASE WHEN %(show_queries)s THEN (SELECT coalesce(json_agg(t), '[]') FROM (
            SELECT query, query_id, count(*)::int AS count FROM active AS q
            WHERE q.application_name = a.application_name AND q.query IS NOT NULL
            GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 5) AS t) END AS top
FROM active AS a
GROUP BY application_name
ORDER BY count DESC, application_name
LIMIT %(max_groups)s
