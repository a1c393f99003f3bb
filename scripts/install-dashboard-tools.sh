#!/usr/bin/env bash
# Installs the tools of the dashboards' structural check (idempotent): Grafana's published
# dashboard types (npm @grafana/schema, the Grafana 11 build matching grafana-foundation-sdk)
# and the TypeScript compiler, into .tools/dashboard-check (gitignored) or $PGCONN_DASHBOARD_TOOLS.
# Prints the install directory on stdout; exits non-zero if anything is missing afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMA_VERSION="11.6.0"
TYPESCRIPT_VERSION="5.8.3"
dir="${PGCONN_DASHBOARD_TOOLS:-$PWD/.tools/dashboard-check}"
stamp="$dir/.installed-schema-$SCHEMA_VERSION-typescript-$TYPESCRIPT_VERSION"

if ! command -v npm >/dev/null 2>&1; then
    echo "install-dashboard-tools: npm not found (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

if [ ! -f "$stamp" ] || [ ! -x "$dir/node_modules/.bin/tsc" ] \
        || [ ! -f "$dir/node_modules/@grafana/schema/package.json" ]; then
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name": "pgconn-dashboard-check", "private": true}' > "$dir/package.json"
    echo "install-dashboard-tools: npm install @grafana/schema@$SCHEMA_VERSION typescript@$TYPESCRIPT_VERSION into $dir" >&2
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error --save-exact \
        "@grafana/schema@$SCHEMA_VERSION" "typescript@$TYPESCRIPT_VERSION" >&2
    rm -f "$dir"/.installed-*
    touch "$stamp"
fi

"$dir/node_modules/.bin/tsc" --version >/dev/null
test -f "$dir/node_modules/@grafana/schema/package.json"
echo "$dir"
