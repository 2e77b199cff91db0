#!/usr/bin/env bash
# Build both images without a Docker engine (buildah, vfs storage, chroot isolation) on an offline Debian
# base made by debootstrap, then run them: `pfeddc-server --help`, a short coordinator start, and
# `pfeddc-client --help`. Prints the image sizes. Needs root. Used by .ci/run.
#   deploy/build-images.sh            build both
#   PFEDDC_IMAGES=coordinator deploy/build-images.sh
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

base=localhost/pfeddc-base:bookworm
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd bookworm "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$work/rootfs" / >/dev/null
  buildah commit --quiet "$ctr" "$base" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

# The CPU torch wheel for this Debian's Python (3.11) may sit in a local wheel folder; PyPI otherwise.
wheels=${PIP_FIND_LINKS:-/opt/wheels}
# This machine's CA bundle (it may trust a TLS-inspecting proxy that the fresh base image does not know).
ca_args=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro --build-arg PIP_CERT=/etc/ssl/host-ca.crt)
mount_args=() ; pip_env=()
if [ -d "$wheels" ]; then mount_args=(--volume "$wheels:/wheels:ro"); pip_env=(--build-arg TORCH_INDEX=https://pypi.org/simple); fi

for image in $images; do
  start=$(date +%s)
  extra=()
  if [ "$image" = client ]; then extra=("${mount_args[@]}" "${pip_env[@]}"); fi
  buildah bud --quiet --layers=false --build-arg BASE="$base" "${ca_args[@]}" \
    --build-arg PIP_FIND_LINKS=/wheels "${extra[@]}" -f "deploy/$image.Dockerfile" -t "pfeddc-$image:ci" . >/dev/null
  echo "built pfeddc-$image:ci in $(( $(date +%s) - start )) s"
done

for image in $images; do
  ctr=$(buildah from "pfeddc-$image:ci")
  if [ "$image" = coordinator ]; then
    buildah run "$ctr" -- pfeddc-server --help | head -3
    # a short real start: it must create its checkpoint and log server_started as the non-root user
    out=$(buildah run --user 10001:10001 "$ctr" -- timeout -s INT 5 pfeddc-server --rounds 1 --port 0 \
      --bind 127.0.0.1 --state-dir /tmp/state --log-format json 2>&1 || true)
    echo "$out" | grep -q '"event": "server_started"' || { echo "coordinator did not start:"; echo "$out"; exit 1; }
    echo "$out" | grep -q '"event": "server_stopped"' || { echo "coordinator did not stop cleanly:"; echo "$out"; exit 1; }
    buildah run "$ctr" -- python3 -c "import importlib.util as u; assert u.find_spec('torch') is None" \
      || { echo "torch found in the coordinator image"; exit 1; }
    buildah run "$ctr" -- python3 -c "import importlib.util as u; assert u.find_spec('pfeddc.client') is None" \
      || { echo "client code found in the coordinator image"; exit 1; }
    echo "coordinator image: --help, start, clean stop, torch-free, no client code: ok"
  else
    buildah run "$ctr" -- pfeddc-client --help | head -3
    buildah run "$ctr" -- python3 -c "import torch, transformers, pfeddc.client.model; print('client image imports ok', torch.__version__)"
  fi
  [ "$(buildah run "$ctr" -- id -u)" = 10001 ] || { echo "pfeddc-$image runs as root"; exit 1; }
  buildah rm "$ctr" >/dev/null
done
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E 'pfeddc-(coordinator|client)' || true
