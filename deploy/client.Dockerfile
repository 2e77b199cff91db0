# The client image: torch + transformers + pfeddc[client], non-root, no secrets, no model weights, no pip.
#   CPU:  buildah bud -f deploy/client.Dockerfile -t pfeddc-client:cpu .
#   CUDA: buildah bud -f deploy/client.Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#           -t pfeddc-client:cuda .      (run with the NVIDIA container toolkit / device plugin)
# The CPU build installs exactly the hash-locked set (torch's CPU wheel included). The CUDA build replaces
# torch with TORCH_VERSION from TORCH_INDEX (and the CUDA libraries it needs), which the lock cannot pin.
ARG BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE} AS build
ARG PIP_CERT
# A folder of wheels mounted at build time (torch's CPU wheel without downloading it), or empty.
ARG PIP_FIND_LINKS
ARG TORCH_INDEX=
ARG TORCH_VERSION=2.13.0
# Where the locked CPU wheel of torch is found when no wheel folder holds it.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY deploy/requirements/client.txt /tmp/requirements.txt
RUN python3 -m venv /opt/pfeddc \
 && if [ -n "${TORCH_INDEX}" ]; then \
      awk '/^torch==/{skip=1; next} skip && /^ /{next} {skip=0; print}' /tmp/requirements.txt > /tmp/r.txt \
      && mv /tmp/r.txt /tmp/requirements.txt \
      && /opt/pfeddc/bin/pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"; \
    fi \
 && /opt/pfeddc/bin/pip install --require-hashes --no-deps \
      --extra-index-url "${TORCH_CPU_INDEX}" -r /tmp/requirements.txt
COPY pyproject.toml README.md /src/
COPY protos /src/protos
COPY common /src/common
COPY server /src/server
COPY client /src/client
RUN /opt/pfeddc/bin/pip install --no-deps --no-build-isolation /src \
 && /opt/pfeddc/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && find /opt/pfeddc -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="pfeddc-client" \
      org.opencontainers.image.description="pfeddc client daemon: personalized federated CLIP prompt learning" \
      org.opencontainers.image.source="https://github.com/pfeddc/pfeddc" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE}"
RUN rm -rf /usr/local/lib/python3*/site-packages/pip /usr/local/lib/python3*/site-packages/pip-* \
    /usr/local/bin/pip* /usr/lib/python3/dist-packages/pip /usr/share/python-wheels \
    /usr/lib/python3*/ensurepip \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/pfeddc pfeddc \
 && mkdir -p /var/lib/pfeddc && chown pfeddc:pfeddc /var/lib/pfeddc
COPY --from=build /opt/pfeddc /opt/pfeddc
ENV PATH=/opt/pfeddc/bin:$PATH HOME=/var/lib/pfeddc HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/pfeddc
ENTRYPOINT ["pfeddc-client"]
CMD ["--help"]
