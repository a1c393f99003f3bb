-- Client backends started after %(since)s (PostgreSQL 12+; pg_stat_get_backend_idset and
-- pg_stat_get_backend_start are unchanged through 18): a churn catch sample. Reading every
-- backend's start time alone costs half of building pg_stat_activity's rows, and the full row
-- (without query text) is built only when some backend is that young: at 1,000 idle sessions a
-- sample costs the server ~1.2 ms. Names are normalised as activity_groups does, so a caught
-- backend falls in the holder a poll would put it in. Backends of other roles whose start the
-- agent may not see (no pg_monitor) are never caught, as in a poll. A backend still
-- authenticating (shown from PostgreSQL 18 on) has no database and no application name yet:
-- left for a later sample.
WITH young AS MATERIALIZED (
    SELECT pg_stat_get_backend_pid(i.id) AS pid
    FROM pg_stat_get_backend_idset() AS i(id)
    WHERE pg_stat_get_backend_start(i.id) > %(since)s
)
SELECT a.pid,
       a.backend_start,
       d.datname::text AS datname,
       coalesce(nullif(a.application_name, ''), %(unset)s) AS application_name,
       CASE WHEN a.client_addr IS NOT NULL THEN host(a.client_addr)
            WHEN a.client_port = -1 THEN %(local)s
            ELSE %(hidden)s END AS client_addr
FROM pg_stat_get_activity(NULL) AS a
JOIN pg_database AS d ON d.oid = a.datid
WHERE EXISTS (SELECT 1 FROM young)
  AND a.pid IN (SELECT pid FROM young)
  AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
