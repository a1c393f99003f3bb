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
       max(greatest(0, extract(epoch FROM now() - state_change)))::float8 AS max_state_age,
       max(greatest(0, extract(epoch FROM now() - xact_start)))::float8 AS max_xact_age,
       (count(*) FILTER (WHERE backend_start > %(since)s))::int AS opened,
       (count(*) FILTER (WHERE backend_start > now() - make_interval(secs => %(churn_window)s)))::int
           AS young
FROM pg_stat_activity
WHERE backend_type = 'client backend'
   OR (backend_type IS NULL AND usesysid IS NOT NULL AND datid IS NOT NULL)
GROUP BY 1, 2, 3, 4, 5
