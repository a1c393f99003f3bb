#!/usr/bin/env bash
# Builds the container image from the project's Dockerfile with Debian's buildah: no Docker
# engine and no registry pulls, the base image made from Debian packages by mmdebstrap.
#
#   scripts/build-image.sh [TAG]      TAG defaults to pgconn-agent:<version> (the Helm chart's
#                                     default image); push it with
#                                     buildah push TAG docker://REGISTRY/pgconn-agent:<version>
#
# The base image localhost/debian-python:bookworm is built only when buildah does not have it,
# from a rootfs tarball cached in $PGCONN_CACHE_DIR (default /var/cache/pgconn-agent) and made
# by mmdebstrap only when missing. BASE_IMAGE=python:3.11-slim-bookworm builds on the Docker
# Hub image instead (needs a registry). STORAGE_DRIVER (default vfs, which works everywhere,
# nested containers included) is buildah's storage driver. Needs root (or a rootless buildah
# setup); scripts/setup.sh installs buildah and mmdebstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${PGCONN_CACHE_DIR:-/var/cache/pgconn-agent}"
SUITE=bookworm
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
DEBIAN_BASE="localhost/debian-python:$SUITE"
BASE_IMAGE="${BASE_IMAGE:-$DEBIAN_BASE}"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agent/__init__.py)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
TAG="${1:-pgconn-agent:$VERSION}"

bah() { buildah --storage-driver "${STORAGE_DRIVER:-vfs}" "$@"; }

mkdir -p "$CACHE"
# One build at a time per cache: concurrent runs would both build the base.
exec 9>"$CACHE/build-image.lock"
flock 9

if [ "$BASE_IMAGE" = "$DEBIAN_BASE" ] && ! bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1
then
    # The tarball's name carries its package list, so changing the list makes a new one.
    rootfs="$CACHE/debian-python-$SUITE-$(echo "$PACKAGES" | sha256sum | cut -c1-12).tar"
    if [ ! -s "$rootfs" ]; then
        echo "build-image: mmdebstrap $SUITE ($PACKAGES) -> $rootfs" >&2
        mmdebstrap --quiet --format=tar --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs.tmp"
        mv -f "$rootfs.tmp" "$rootfs"
    fi
    echo "build-image: importing $rootfs as $DEBIAN_BASE" >&2
    container="$(bah from scratch)"
    bah add --quiet "$container" "$rootfs" /
    bah commit --quiet --rm "$container" "$DEBIAN_BASE" >/dev/null
fi

# --format docker keeps HEALTHCHECK (the OCI format drops it). The CA mount lets pip inside the
# build trust what the host trusts (a TLS-intercepting proxy, a private index).
bah bud --quiet --format docker --isolation chroot --network host \
    -v /etc/ssl/certs:/etc/ssl/certs:ro \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" -t "$TAG" . >/dev/null
# Intermediate build-stage images are not needed once the image exists.
bah rmi --prune >/dev/null 2>&1 || true
echo "$TAG"
