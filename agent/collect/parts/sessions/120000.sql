-- The exceptional sessions, row by row (PostgreSQL 12+): waiting on a heavyweight lock, blocking
-- one, or among the oldest idle in transaction. pg_blocking_pids() is called only for lock
-- waiters (it takes the lock manager's partition locks), and each filter scans the activity
-- rows once without building per-row arrays. Query text only when asked for.
-- Without pg_monitor other roles' wait events read NULL (backend_type too), while pg_locks and
-- pg_blocking_pids() stay readable: such sessions count as waiters when pg_locks shows them
-- waiting, so blockers are found also then (their details show as hidden). The pg_locks
-- lookup runs only for hidden rows, so a pg_monitor agent pays nothing for it.
WITH waiters AS MATERIALIZED (
    SELECT pid, pg_blocking_pids(pid) AS blocking_pids
    FROM pg_stat_activity
    WHERE wait_event_type = 'Lock'
       OR (backend_type IS NULL
           AND pid IN (SELECT pid FROM pg_locks WHERE NOT granted AND pid IS NOT NULL))
),
blockers AS (SELECT DISTINCT unnest(blocking_pids) AS pid FROM waiters),
idle_tx AS (
    SELECT pid FROM pg_stat_activity
    WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
    ORDER BY xact_start
    LIMIT %(idle_tx_limit)s
),
wanted AS (
    SELECT pid FROM waiters WHERE cardinality(blocking_pids) > 0
    UNION SELECT pid FROM blockers
    UNION SELECT pid FROM idle_tx
),
held AS (
    SELECT pid, count(*)::int AS n FROM pg_locks
    WHERE granted AND locktype <> 'virtualxid' AND pid IN (SELECT pid FROM wanted)
    GROUP BY pid
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
       coalesce(w.blocking_pids, '{}'::int[]) AS blocking_pids,
       -- greatest() ignores NULLs: a hidden or transaction-less session has no age, not 0.
       CASE WHEN a.state_change IS NOT NULL
            THEN greatest(0, date_part('epoch', now() - a.state_change)) END AS state_age,
       CASE WHEN a.xact_start IS NOT NULL
            THEN greatest(0, date_part('epoch', now() - a.xact_start)) END AS xact_age,
       coalesce(held.n, 0) AS locks_held,
       CASE WHEN %(show_queries)s THEN left(a.query, %(query_chars)s) END AS query
FROM pg_stat_activity a
JOIN wanted USING (pid)
LEFT JOIN waiters w USING (pid)
LEFT JOIN held USING (pid)
ORDER BY (a.pid IN (SELECT pid FROM blockers)) DESC, a.xact_start NULLS LAST, a.pid
LIMIT %(session_limit)s
