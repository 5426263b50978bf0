#!/usr/bin/env bash
# The kind end-to-end environment for rayguard.
#
#   scripts/kind-e2e.sh up     kind cluster (kind-config.yaml), both images built and loaded,
#                              the CRD, the operator chart, and the demo RayCluster, Ready
#   scripts/kind-e2e.sh down   delete the kind cluster
#
# Needs docker (with a running engine), kind, kubectl and helm. `make kind-up`, `make e2e`
# and `make kind-down` call this. `up` is idempotent: run it again after a code change and
# it rebuilds the images, rolls the operator, and recreates the demo RayCluster when the
# node image changed (a reused tag alone would leave the old pods running).
#
# kubectl and helm talk to the cluster through a private kubeconfig taken from
# `kind get kubeconfig`, never through your current context.
#
# Environment:
#   RAYGUARD_READY_TIMEOUT   how long to wait for the RayCluster to be Ready (default 10m)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=rayguard                  # the name in kind-config.yaml
KIND_CONFIG=kind-config.yaml
# The tag matches the chart's appVersion (the operator image's default tag), values.yaml's
# nodeImage and spec.image in examples/raycluster.yaml.
TAG=0.1.0
NODE_IMAGE=rayguard/node:${TAG}
OPERATOR_REPOSITORY=rayguard/operator
OPERATOR_IMAGE=${OPERATOR_REPOSITORY}:${TAG}
RELEASE=rayguard
RELEASE_NAMESPACE=rayguard-system
CHART=charts/rayguard
CRD_FILE=crds/rayclusters.rayguard.dev.yaml
CRD_NAME=rayclusters.rayguard.dev
EXAMPLE=examples/raycluster.yaml
RAYCLUSTER=demo
RAYCLUSTER_NAMESPACE=default
READY_TIMEOUT=${RAYGUARD_READY_TIMEOUT:-10m}
# Records which node image the demo RayCluster's pods were created from.
IMAGE_ANNOTATION=e2e.rayguard.dev/node-image-id

step() { printf '==> %s\n' "$*"; }
die() { printf 'kind-e2e.sh: %s\n' "$*" >&2; exit 1; }

usage() {
  echo "usage: $0 up|down" >&2
  exit 2
}

# Every missing tool named in one line; then whether the docker engine answers.
require_tools() {
  local missing="" tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing="${missing:+$missing, }$tool"
  done
  if [ -n "$missing" ]; then
    die "missing: $missing (the kind e2e environment needs docker with a running engine, kind, kubectl and helm)"
  fi
  if ! docker info >/dev/null 2>&1; then
    die "the docker engine is not reachable (docker info failed): start docker, or check DOCKER_HOST"
  fi
}

cluster_exists() {
  local clusters
  clusters=$(kind get clusters 2>/dev/null) || return 1
  grep -qx "$CLUSTER" <<<"$clusters"
}

image_id() {
  docker image inspect --format '{{.Id}}' "$1"
}

WORKDIR=""
cleanup() {
  if [ -n "$WORKDIR" ]; then rm -rf "$WORKDIR"; fi
}
trap cleanup EXIT

# What a human needs when the operator or the RayCluster does not come up.
diagnose() {
  echo "---- diagnostics ----" >&2
  kubectl get rgc "$RAYCLUSTER" -n "$RAYCLUSTER_NAMESPACE" -o yaml >&2 || true
  kubectl get pods -n "$RAYCLUSTER_NAMESPACE" -l "rayguard.dev/cluster=$RAYCLUSTER" -o wide >&2 || true
  kubectl describe pods -n "$RAYCLUSTER_NAMESPACE" -l "rayguard.dev/cluster=$RAYCLUSTER" >&2 || true
  kubectl get pods -n "$RELEASE_NAMESPACE" -o wide >&2 || true
  kubectl describe deployment -n "$RELEASE_NAMESPACE" "$RELEASE" >&2 || true
  kubectl logs -n "$RELEASE_NAMESPACE" "deployment/$RELEASE" --tail=100 >&2 || true
  echo "---- end of diagnostics ----" >&2
}

up() {
  require_tools docker kind kubectl helm
  WORKDIR=$(mktemp -d)
  local kubeconfig="$WORKDIR/kubeconfig" values="$WORKDIR/values.yaml"

  if cluster_exists; then
    step "kind cluster $CLUSTER exists: reusing it"
  else
    step "creating kind cluster $CLUSTER from $KIND_CONFIG"
    kind create cluster --name "$CLUSTER" --config "$KIND_CONFIG" --wait 5m
  fi
  kind get kubeconfig --name "$CLUSTER" > "$kubeconfig"
  export KUBECONFIG="$kubeconfig"

  step "building $NODE_IMAGE (node_image/Dockerfile)"
  docker build -f node_image/Dockerfile -t "$NODE_IMAGE" .
  step "building $OPERATOR_IMAGE (operator/Dockerfile)"
  docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .

  step "loading $NODE_IMAGE into kind cluster $CLUSTER"
  kind load docker-image "$NODE_IMAGE" --name "$CLUSTER"
  step "loading $OPERATOR_IMAGE into kind cluster $CLUSTER"
  kind load docker-image "$OPERATOR_IMAGE" --name "$CLUSTER"

  # helm installs a chart's crds/ only on first install; apply the single source so that a
  # changed CRD reaches a reused cluster too.
  step "applying the RayCluster CRD from $CRD_FILE"
  kubectl apply --server-side --force-conflicts -f "$CRD_FILE"
  kubectl wait --for=condition=Established "crd/$CRD_NAME" --timeout=60s

  # The image id as a pod annotation: a rebuilt operator image (same tag) rolls the Deployment.
  local operator_id
  operator_id=$(image_id "$OPERATOR_IMAGE")
  cat > "$values" <<VALUES
image:
  repository: "$OPERATOR_REPOSITORY"
  tag: "$TAG"
  pullPolicy: IfNotPresent
nodeImage: "$NODE_IMAGE"
podAnnotations:
  e2e.rayguard.dev/operator-image-id: "$operator_id"
VALUES
  step "installing chart $CHART as release $RELEASE in namespace $RELEASE_NAMESPACE"
  if ! helm upgrade --install "$RELEASE" "$CHART" -n "$RELEASE_NAMESPACE" --create-namespace \
       -f "$values" --wait --timeout 5m; then
    diagnose
    die "helm upgrade --install $RELEASE failed (diagnostics above)"
  fi

  local node_id current
  node_id=$(image_id "$NODE_IMAGE")
  if kubectl get rgc "$RAYCLUSTER" -n "$RAYCLUSTER_NAMESPACE" >/dev/null 2>&1; then
    current=$(kubectl get rgc "$RAYCLUSTER" -n "$RAYCLUSTER_NAMESPACE" \
      -o "jsonpath={.metadata.annotations.e2e\.rayguard\.dev/node-image-id}")
    if [ "$current" != "$node_id" ]; then
      step "node image changed since RayCluster $RAYCLUSTER was created: deleting it"
      kubectl delete rgc "$RAYCLUSTER" -n "$RAYCLUSTER_NAMESPACE" --wait --timeout=5m
    fi
  fi
  step "applying $EXAMPLE (RayCluster $RAYCLUSTER in namespace $RAYCLUSTER_NAMESPACE)"
  kubectl apply -n "$RAYCLUSTER_NAMESPACE" -f "$EXAMPLE"
  kubectl annotate --overwrite -n "$RAYCLUSTER_NAMESPACE" rgc "$RAYCLUSTER" "$IMAGE_ANNOTATION=$node_id" >/dev/null

  step "waiting up to $READY_TIMEOUT for RayCluster $RAYCLUSTER to be Ready"
  if ! kubectl wait -n "$RAYCLUSTER_NAMESPACE" "rgc/$RAYCLUSTER" --for=condition=Ready --timeout="$READY_TIMEOUT"; then
    diagnose
    die "RayCluster $RAYCLUSTER was not Ready after $READY_TIMEOUT (diagnostics above)"
  fi
  kubectl get rgc "$RAYCLUSTER" -n "$RAYCLUSTER_NAMESPACE"
  step "ready: kubectl --context kind-$CLUSTER get rgc $RAYCLUSTER"
}

down() {
  require_tools docker kind
  if cluster_exists; then
    step "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER"
  else
    step "no kind cluster $CLUSTER: nothing to delete"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) usage ;;
esac
