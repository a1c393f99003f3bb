-- Ungranted heavyweight locks (PostgreSQL 14+: pg_locks.waitstart gives the wait age).
SELECT pid,
       locktype,
       mode,
       relation::regclass::text AS relation,
       waitstart,
       -- waitstart is NULL for a moment after the wait begins: no age then, not 0.
       CASE WHEN waitstart IS NOT NULL
            THEN greatest(0, date_part('epoch', now() - waitstart)) END AS wait_age
FROM pg_locks
WHERE NOT granted AND pid IS NOT NULL
