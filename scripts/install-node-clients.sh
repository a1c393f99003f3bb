#!/usr/bin/env bash
# Installs the real Node clients of the process-attribution and pool tests (idempotent): npm pg
# (node-postgres), into .tools/node-clients (gitignored) or $PGCONN_NODE_CLIENTS.
# Prints the install directory on stdout; exits non-zero if anything is missing afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_VERSION="8.23.1"
dir="${PGCONN_NODE_CLIENTS:-$PWD/.tools/node-clients}"
stamp="$dir/.installed-pg-$PG_VERSION"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install-node-clients: node/npm not found (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

if [ ! -f "$stamp" ] || [ ! -f "$dir/node_modules/pg/package.json" ]; then
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name": "pgconn-node-clients", "private": true}' > "$dir/package.json"
    echo "install-node-clients: npm install pg@$PG_VERSION into $dir" >&2
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error --save-exact \
        "pg@$PG_VERSION" >&2
    rm -f "$dir"/.installed-*
    touch "$stamp"
fi

test -f "$dir/node_modules/pg/package.json"
echo "$dir"
