#!/usr/bin/env bash
# Builds rayguard/node and rayguard/operator (tag: TAG, default 0.1.0) from the repository root,
# with podman, or docker where podman is absent (ENGINE=docker picks docker).
#
# The base is each Dockerfile's BASE_IMAGE default (an exact python:3.11-slim tag). Where it is
# not here and cannot be pulled (no registry reachable), a local Debian bookworm base with
# Python 3.11 is built with mmdebstrap (root only) and imported as localhost/rayguard/base,
# once; the Dockerfiles install into a virtualenv, so they work on either base.
# BASE_IMAGE=<image> skips all of that and builds on the image given.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-0.1.0}
LOCAL_BASE=localhost/rayguard/base:bookworm-python3.11
ENGINE=${ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}
command -v "$ENGINE" >/dev/null 2>&1 || {
  echo "build-images: neither podman nor docker is installed (make images installs podman as root)" >&2
  exit 1
}
build_opts=()
if [ "$ENGINE" = podman ]; then
  # rayguard's podman settings (runc; no default ulimits): see scripts/podman/containers.conf.
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}
  # pip and apt inside the build trust what this machine trusts (a proxy's CA, say).
  [ -d /etc/ssl/certs ] && build_opts+=(--volume /etc/ssl/certs:/etc/ssl/certs:ro)
fi

default_base=$(sed -n 's/^ARG BASE_IMAGE=//p' node_image/Dockerfile)
base=${BASE_IMAGE:-}
if [ -z "$base" ]; then
  if "$ENGINE" image inspect "$default_base" >/dev/null 2>&1 \
      || "$ENGINE" pull -q "docker.io/library/$default_base" >/dev/null 2>&1; then
    base=$default_base
  else
    base=$LOCAL_BASE
    if ! "$ENGINE" image inspect "$base" >/dev/null 2>&1; then
      if [ "$(id -u)" != 0 ] || ! command -v mmdebstrap >/dev/null 2>&1; then
        echo "build-images: $default_base cannot be pulled, and a local Debian base needs root and" \
             "mmdebstrap (apt-get install mmdebstrap); or set BASE_IMAGE to an image with Python 3.11" >&2
        exit 1
      fi
      echo "build-images: $default_base cannot be pulled (no registry reachable): building a local" \
           "Debian bookworm base with Python 3.11 with mmdebstrap, $base"
      work=$(mktemp -d)
      trap 'rm -rf "$work"' EXIT
      mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
        bookworm "$work/base.tar" >"$work/mmdebstrap.log" 2>&1 \
        || { tail -20 "$work/mmdebstrap.log" >&2; exit 1; }
      "$ENGINE" import -q --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$work/base.tar" "$base" >/dev/null
      rm -rf "$work"
    else
      echo "build-images: $default_base cannot be pulled: building on the local Debian base $base"
    fi
  fi
fi

for image in node operator; do
  dockerfile=$([ "$image" = node ] && echo node_image/Dockerfile || echo operator/Dockerfile)
  started=$SECONDS
  log=$(mktemp)
  echo "build-images: rayguard/$image:$TAG from $dockerfile on $base (log: $log)"
  if ! "$ENGINE" build "${build_opts[@]}" --build-arg "BASE_IMAGE=$base" -f "$dockerfile" \
      -t "rayguard/$image:$TAG" . >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build-images: building rayguard/$image:$TAG failed (log: $log)" >&2
    exit 1
  fi
  rm -f "$log"
  echo "build-images: rayguard/$image:$TAG built in $((SECONDS - started))s"
done
"$ENGINE" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "rayguard/(node|operator):$TAG" || true
