-- Client backends grouped by holder and state, aggregated on the server (PostgreSQL 12+).
-- Sessions of other roles that the agent may not see (no pg_monitor) show only datid, pid,
-- usesysid and application_name (backend_type, state and client address are NULL): those with
-- a user and a database are counted as client backends under %(hidden)s.
SELECT datname,
       usename,
       coalesce(nullif(application_name, ''), %(unset)s) AS application_name,
       CASE WHEN client_addr IS NOT NULL THEN host(client_addr)
            WHEN client_port = -1 THEN %(local)s
            ELSE %(hidden)s END AS client_addr,
       coalesce(state, %(hidden)s) AS state,
       count(*)::int AS count,
       -- greatest() ignores NULLs: only clamp when the group has a state_change / xact_start,
       -- so a group without an open transaction reports no age instead of 0.
       CASE WHEN min(state_change) IS NOT NULL
            THEN greatest(0, date_part('epoch', now() - min(state_change)))
       END AS max_state_age,
       CASE WHEN min(xact_start) IS NOT NULL
            THEN greatest(0, date_part('epoch', now() - min(xact_start)))
       END AS max_xact_age,
       -- Backends started shortly before the previous poll may have been invisible to it (still
       -- authenticating): list the recent ones and let the client count those it has not seen.
       coalesce(array_agg(pid ORDER BY pid) FILTER (WHERE backend_start > coalesce(%(since)s, now())
                                                             - interval '10 seconds'),
                '{}') AS recent_pids,
       (count(*) FILTER (WHERE backend_start > now() - make_interval(secs => %(churn_window)s)))::int
           AS young
FROM pg_stat_activity
WHERE backend_type = 'client backend'
   OR (backend_type IS NULL AND usesysid IS NOT NULL AND datid IS NOT NULL)
GROUP BY 1, 2, 3, 4, 5
