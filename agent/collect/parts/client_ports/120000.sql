-- Client backends connected from this host's own addresses, one row each (PostgreSQL 12+):
-- the agent joins (client_addr, client_port) to the local process that owns the socket. The
-- client passes this host's networks as %(local_nets)s; an empty list (attribution off, or no
-- /proc) makes the part return nothing. Unix-socket clients (client_addr %(local)s, matched by
-- backend pid) only when %(unix_clients)s (the server runs on this host). The agent's own
-- connection is left out; at most %(client_port_limit)s rows. server_port (the same on every
-- row) tells apart client sockets that share a local port but reach different servers.
SELECT pid,
       coalesce(host(client_addr), %(local)s) AS client_addr,
       client_port,
       coalesce(nullif(application_name, ''), %(unset)s) AS application_name,
       coalesce(state, %(hidden)s) AS state,
       current_setting('port')::int AS server_port
FROM pg_stat_activity
WHERE backend_type = 'client backend'
  AND (client_addr <<= ANY (%(local_nets)s::inet[])
       OR (%(unix_clients)s AND client_addr IS NULL AND client_port = -1))
  AND pid <> pg_backend_pid()
ORDER BY pid
LIMIT %(client_port_limit)s
