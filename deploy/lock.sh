#!/usr/bin/env bash
# Regenerate the hash-locked dependency sets of the images (deploy/requirements/*.txt) from pyproject.toml.
# Run after changing dependencies; commit the result. Needs uv (pip install uv) and the CPU torch wheel's
# index or a folder holding it (PIP_FIND_LINKS, default /opt/wheels).
set -euo pipefail
cd "$(dirname "$0")/requirements"
export SSL_CERT_FILE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
common=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-emit-package pfeddc
        --quiet)
uv pip compile coordinator.in "${common[@]}" -o coordinator.txt
links=${PIP_FIND_LINKS:-/opt/wheels}
if [ -d "$links" ]; then src=(--find-links "$links"); else src=(--extra-index-url https://download.pytorch.org/whl/cpu); fi
uv pip compile client.in "${common[@]}" "${src[@]}" -o client.txt
echo "locked: $(grep -c '^[a-z]' coordinator.txt) coordinator and $(grep -c '^[a-z]' client.txt) client packages"
