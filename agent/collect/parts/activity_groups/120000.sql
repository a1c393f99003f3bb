-- Client backends grouped by holder and state, aggregated and capped on the server
-- (PostgreSQL 12+). Dimensions configured out (the by_<dimension> flags) are NULL, so groups
-- come at the configured granularity; beyond the %(max_groups)s - 1 largest they fold into one
-- overflow row (every dimension %(overflow)s, ``folded`` = how many), so a storm of distinct
-- names costs the client nothing. Ties break on the names in code-point order, as in Python.
-- Sessions of other roles that the agent may not see (no pg_monitor) show only datid, pid,
-- usesysid and application_name (backend_type, state and client address are NULL): those with
-- a user and a database are counted as client backends under %(hidden)s; a client backend
-- still starting up (no state yet) is 'starting'.
WITH grouped AS (
    SELECT CASE WHEN %(by_datname)s THEN datname::text END AS datname,
           CASE WHEN %(by_usename)s THEN usename::text END AS usename,
           CASE WHEN %(by_application_name)s
                THEN coalesce(nullif(application_name, ''), %(unset)s) END AS application_name,
           CASE WHEN NOT %(by_client_addr)s THEN NULL
                WHEN client_addr IS NOT NULL THEN host(client_addr)
                WHEN client_port = -1 THEN %(local)s
                ELSE %(hidden)s END AS client_addr,
           -- A backend still authenticating has no state yet either: 'starting', not hidden.
           CASE WHEN %(by_state)s
                THEN coalesce(state, CASE WHEN backend_type IS NULL THEN %(hidden)s
                                          ELSE 'starting' END) END AS state,
           count(*)::int AS count,
           min(state_change) AS state_change,
           min(xact_start) AS xact_start,
           -- Backends started shortly before the previous poll may have been invisible to it
           -- (still authenticating): list the recent ones, the client counts those it has not
           -- seen.
           array_agg(pid ORDER BY pid) FILTER (
               WHERE backend_start > coalesce(%(since)s, now()) - interval '10 seconds')
               AS recent_pids,
           (count(*) FILTER (
               WHERE backend_start > now() - make_interval(secs => %(churn_window)s)))::int
               AS young
    FROM pg_stat_activity
    WHERE backend_type = 'client backend'
       OR (backend_type IS NULL AND usesysid IS NOT NULL AND datid IS NOT NULL)
    GROUP BY 1, 2, 3, 4, 5
),
ranked AS (
    SELECT grouped.*,
           row_number() OVER (ORDER BY count DESC,
                                       coalesce(datname, '') COLLATE "C",
                                       coalesce(usename, '') COLLATE "C",
                                       coalesce(application_name, '') COLLATE "C",
                                       coalesce(client_addr, '') COLLATE "C",
                                       coalesce(state, '') COLLATE "C") AS rank,
           count(*) OVER () AS groups
    FROM grouped
),
kept AS (
    SELECT * FROM ranked WHERE groups <= %(max_groups)s OR rank < %(max_groups)s
),
folded AS (
    SELECT CASE WHEN %(by_datname)s THEN %(overflow)s END AS datname,
           CASE WHEN %(by_usename)s THEN %(overflow)s END AS usename,
           CASE WHEN %(by_application_name)s THEN %(overflow)s END AS application_name,
           CASE WHEN %(by_client_addr)s THEN %(overflow)s END AS client_addr,
           CASE WHEN %(by_state)s THEN %(overflow)s END AS state,
           sum(count)::int AS count,
           min(state_change) AS state_change,
           min(xact_start) AS xact_start,
           (SELECT array_agg(p ORDER BY p)
            FROM ranked r, unnest(r.recent_pids) AS p
            WHERE r.groups > %(max_groups)s AND r.rank >= %(max_groups)s) AS recent_pids,
           sum(young)::int AS young,
           count(*)::int AS folded
    FROM ranked
    WHERE groups > %(max_groups)s AND rank >= %(max_groups)s
    HAVING count(*) > 0
)
SELECT datname, usename, application_name, client_addr, state, count,
       -- greatest() ignores NULLs: only clamp when the group has a state_change / xact_start,
       -- so a group without an open transaction reports no age instead of 0.
       CASE WHEN state_change IS NOT NULL
            THEN greatest(0, date_part('epoch', now() - state_change)) END AS max_state_age,
       CASE WHEN xact_start IS NOT NULL
            THEN greatest(0, date_part('epoch', now() - xact_start)) END AS max_xact_age,
       coalesce(recent_pids, '{}') AS recent_pids,
       young,
       folded
FROM (SELECT datname, usename, application_name, client_addr, state, count, state_change,
             xact_start, recent_pids, young, 0 AS folded FROM kept
      UNION ALL
      SELECT * FROM folded) AS capped
