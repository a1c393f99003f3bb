-- Ungranted heavyweight locks (PostgreSQL 12-13: no waitstart, so no wait age).
SELECT pid,
       locktype,
       mode,
       relation::regclass::text AS relation,
       NULL::timestamptz AS waitstart,
       NULL::float8 AS wait_age
FROM pg_locks
WHERE NOT granted AND pid IS NOT NULL
