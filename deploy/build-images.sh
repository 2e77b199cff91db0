#!/usr/bin/env bash
# Build both images without a Docker engine (buildah, vfs storage, chroot isolation) and check them: the
# offline path on a Debian base made by debootstrap (always), and the documented default base pinned by digest
# (when its registry can be reached). Each image is run: --help/--version, a short coordinator start and stop as
# the non-root user, no torch and no client code in the coordinator, the client stack imports, no pip, OCI labels.
# Prints build times and sizes. Needs root. Used by .ci/run.
#   deploy/build-images.sh                       build both
#   PFEDDC_IMAGES=coordinator deploy/build-images.sh
#   PFEDDC_DEFAULT_BASE=skip deploy/build-images.sh     offline path only
set -euo pipefail
cd "$(dirname "$0")/.."
images=${PFEDDC_IMAGES:-coordinator client}
work=${PFEDDC_IMAGE_WORK:-/var/tmp/pfeddc-images}
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
mkdir -p "$work"

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq buildah debootstrap >/dev/null
fi

local_base=localhost/pfeddc-base:bookworm
if ! buildah inspect --type image "$local_base" >/dev/null 2>&1; then
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd bookworm "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$work/rootfs" / >/dev/null
  buildah commit --quiet "$ctr" "$local_base" >/dev/null
  buildah rm "$ctr" >/dev/null
fi
# The local base by its immutable image id (the digest of what debootstrap made), not by a movable tag.
local_base_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$local_base")

# The CPU torch wheel for Python 3.11 may sit in a local wheel folder; the lock pins its hash either way.
wheels=${PIP_FIND_LINKS:-/opt/wheels}
# This machine's CA bundle (it may trust a TLS-inspecting proxy that the fresh base image does not know).
ca_args=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro --build-arg PIP_CERT=/etc/ssl/host-ca.crt)
wheel_args=()
if [ -d "$wheels" ]; then
  wheel_args=(--volume "$wheels:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels
              --build-arg TORCH_CPU_INDEX=https://pypi.org/simple)
fi
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")

build() {  # build IMAGE TAG BASE
  local image=$1 tag=$2 base=$3 start extra=()
  start=$(date +%s)
  if [ "$image" = client ]; then extra=("${wheel_args[@]}"); fi
  buildah bud --quiet --layers --build-arg BASE="$base" --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" "${ca_args[@]}" "${extra[@]}" -f "deploy/$image.Dockerfile" \
    -t "pfeddc-$image:$tag" . >/dev/null
  echo "built pfeddc-$image:$tag in $(( $(date +%s) - start )) s (base $base)"
}

check() {  # check IMAGE TAG
  local image=$1 tag=$2 ctr labels
  ctr=$(buildah from "pfeddc-$image:$tag")
  if [ "$image" = coordinator ]; then
    buildah run "$ctr" -- pfeddc-server --version
    # a short real start: it must create its checkpoint, serve health and metrics, and stop cleanly on SIGINT
    # (its exit code is 130, SIGINT before the federation finished; `exit 0` keeps buildah's own words out)
    out=$(buildah run --user 10001:10001 "$ctr" -- sh -c 'timeout -s INT 5 pfeddc-server --rounds 1 --port 0 \
      --bind 127.0.0.1 --health-port 0 --metrics-port 0 --state-dir /tmp/state --log-format json 2>&1; exit 0')
    echo "$out" | grep -q '"event": "server_started"' || { echo "coordinator did not start:"; echo "$out"; exit 1; }
    echo "$out" | grep -q '"event": "server_stopped"' || { echo "coordinator did not stop cleanly:"; echo "$out"; exit 1; }
    echo "$out" | python3 -c "import json,sys; [json.loads(l) for l in sys.stdin if l.strip()]" \
      || { echo "coordinator output is not JSON lines:"; echo "$out"; exit 1; }
    buildah run "$ctr" -- python3 -c "import importlib.util as u; assert u.find_spec('torch') is None" \
      || { echo "torch found in the coordinator image"; exit 1; }
    buildah run "$ctr" -- python3 -c "import importlib.util as u; assert u.find_spec('pfeddc.client') is None" \
      || { echo "client code found in the coordinator image"; exit 1; }
  else
    buildah run "$ctr" -- pfeddc-client --version
    buildah run "$ctr" -- python3 -c "import torch, transformers, pfeddc.client.model; print('client image imports ok', torch.__version__)"
  fi
  if buildah run "$ctr" -- python3 -m pip --version >/dev/null 2>&1 \
     || buildah run "$ctr" -- test -e /opt/pfeddc/bin/pip >/dev/null 2>&1; then
    echo "pip found in the runtime of pfeddc-$image:$tag"; exit 1
  fi
  [ "$(buildah run "$ctr" -- id -u)" = 10001 ] || { echo "pfeddc-$image runs as root"; exit 1; }
  labels=$(buildah inspect --type image --format '{{.OCIv1.Config.Labels}}' "pfeddc-$image:$tag")
  for key in title source licenses version revision; do
    echo "$labels" | grep -q "org.opencontainers.image.$key" || { echo "label $key missing: $labels"; exit 1; }
  done
  buildah rm "$ctr" >/dev/null
  echo "pfeddc-$image:$tag: version, start/stop, non-root, no pip, OCI labels: ok"
}

for image in $images; do build "$image" ci "$local_base_id"; done
for image in $images; do check "$image" ci; done

# The documented default base (python:3.11-slim-bookworm, pinned by digest in the Dockerfiles), when reachable.
default_base=$(sed -n 's/^ARG BASE=//p' deploy/coordinator.Dockerfile)
if [ "${PFEDDC_DEFAULT_BASE:-try}" = skip ]; then
  echo "default base: skipped (PFEDDC_DEFAULT_BASE=skip)"
elif timeout 90 buildah pull --quiet "docker.io/library/${default_base%@*}" >/dev/null 2>&1; then
  buildah pull --quiet "docker.io/library/$default_base" >/dev/null \
    || { echo "the pinned digest of $default_base cannot be pulled although its tag can: update it"; exit 1; }
  for image in $images; do build "$image" default "docker.io/library/$default_base"; check "$image" default; done
else
  echo "default base ${default_base%@*}: registry not reachable from here; built the offline path only"
fi
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E 'pfeddc-(coordinator|client)' || true
