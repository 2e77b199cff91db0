# The client image: torch + transformers + pfeddc[client], non-root, no secrets, no model weights.
#   CPU:  buildah bud -f deploy/client.Dockerfile -t pfeddc-client:cpu .
#   CUDA: buildah bud -f deploy/client.Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#           -t pfeddc-client:cuda .      (run with the NVIDIA container toolkit / device plugin)
ARG BASE=python:3.11-slim
FROM ${BASE}
# Build-time only, for networks behind a TLS-inspecting proxy: a CA bundle path mounted into the build.
ARG PIP_CERT
ARG TORCH_VERSION=2.13.0
# Set to a folder of wheels (mounted at build time) to install torch without downloading it.
ARG PIP_FIND_LINKS
# The CPU wheel index by default; a CUDA index for the GPU variant.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/pfeddc \
 && /opt/pfeddc/bin/pip install --extra-index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY protos /src/protos
COPY common /src/common
COPY server /src/server
COPY client /src/client
RUN /opt/pfeddc/bin/pip install "/src[client]" \
 && rm -rf /src \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/pfeddc pfeddc \
 && mkdir -p /var/lib/pfeddc && chown pfeddc:pfeddc /var/lib/pfeddc
ENV PATH=/opt/pfeddc/bin:$PATH HOME=/var/lib/pfeddc HF_HUB_OFFLINE=1
USER 10001:10001
WORKDIR /var/lib/pfeddc
ENTRYPOINT ["pfeddc-client"]
CMD ["--help"]
