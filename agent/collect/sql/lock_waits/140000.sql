-- Ungranted heavyweight locks (PostgreSQL 14+: pg_locks.waitstart gives the wait age).
SELECT pid,
       locktype,
       mode,
       relation::regclass::text AS relation,
       waitstart,
       greatest(0, extract(epoch FROM now() - waitstart))::float8 AS wait_age
FROM pg_locks
WHERE NOT granted AND pid IS NOT NULL
