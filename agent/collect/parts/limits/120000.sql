-- Role and database connection limits that are set, with current client backends (PostgreSQL 12+).
WITH per_role AS (
    SELECT usesysid AS oid, count(*)::int AS n FROM pg_stat_activity
    WHERE backend_type = 'client backend' GROUP BY 1
),
per_db AS (
    SELECT datid AS oid, count(*)::int AS n FROM pg_stat_activity
    WHERE backend_type = 'client backend' GROUP BY 1
)
SELECT 'role' AS scope, r.rolname::text AS name, r.rolconnlimit AS "limit",
       coalesce(per_role.n, 0) AS current
FROM pg_roles r LEFT JOIN per_role ON per_role.oid = r.oid
WHERE r.rolconnlimit >= 0
UNION ALL
SELECT 'database', d.datname::text, d.datconnlimit, coalesce(per_db.n, 0)
FROM pg_database d LEFT JOIN per_db ON per_db.oid = d.oid
WHERE d.datconnlimit >= 0
