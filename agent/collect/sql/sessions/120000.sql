-- The exceptional sessions, row by row (PostgreSQL 12+): waiting on a heavyweight lock, blocking
-- one, or among the oldest idle in transaction. pg_blocking_pids() is called only for lock
-- waiters: it takes the lock manager's partition locks. Query text only when asked for.
WITH a AS MATERIALIZED (
    SELECT pid, datname, usename, application_name, client_addr, client_port, client_hostname,
           backend_type, state, backend_start, xact_start, query_start, state_change,
           wait_event_type, wait_event,
           CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid)
                ELSE '{}'::int[] END AS blocking_pids,
           query
    FROM pg_stat_activity
),
blockers AS (SELECT DISTINCT unnest(blocking_pids) AS pid FROM a),
idle_tx AS (
    SELECT pid FROM a
    WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
    ORDER BY xact_start
    LIMIT %(idle_tx_limit)s
),
held AS (
    SELECT pid, count(*)::int AS n FROM pg_locks
    WHERE granted AND locktype <> 'virtualxid' GROUP BY pid
)
SELECT a.pid,
       a.datname,
       a.usename,
       coalesce(nullif(a.application_name, ''), %(unset)s) AS application_name,
       CASE WHEN a.client_addr IS NOT NULL THEN host(a.client_addr)
            WHEN a.client_port = -1 THEN %(local)s
            ELSE %(hidden)s END AS client_addr,
       a.client_hostname,
       coalesce(a.backend_type, 'unknown') AS backend_type,
       coalesce(a.state, %(hidden)s) AS state,
       a.backend_start,
       a.xact_start,
       a.query_start,
       a.state_change,
       a.wait_event_type,
       a.wait_event,
       a.blocking_pids,
       -- greatest() ignores NULLs: no state_change / xact_start means no age, not 0.
       CASE WHEN a.state_change IS NOT NULL
            THEN greatest(0, extract(epoch FROM now() - a.state_change))::float8 END AS state_age,
       CASE WHEN a.xact_start IS NOT NULL
            THEN greatest(0, extract(epoch FROM now() - a.xact_start))::float8 END AS xact_age,
       coalesce(held.n, 0) AS locks_held,
       CASE WHEN %(show_queries)s THEN left(a.query, %(query_chars)s) END AS query
FROM a
LEFT JOIN held USING (pid)
WHERE cardinality(a.blocking_pids) > 0
   OR a.pid IN (SELECT pid FROM blockers)
   OR a.pid IN (SELECT pid FROM idle_tx)
ORDER BY (a.pid IN (SELECT pid FROM blockers)) DESC, a.xact_start NULLS LAST
LIMIT %(session_limit)s
