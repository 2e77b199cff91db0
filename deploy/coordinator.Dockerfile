# The coordinator image: the base install only (no torch, no transformers, no client code), non-root, no secrets,
# no pip. Two stages: `build` installs the hash-locked dependency set, then pfeddc; `runtime` copies the venv.
#   buildah bud -f deploy/coordinator.Dockerfile -t pfeddc-coordinator .     (or docker build)
# The default base is pinned by digest; --build-arg BASE=... picks another (deploy/build-images.sh uses an
# offline Debian base).
ARG BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE} AS build
# Build-time only, for networks behind a TLS-inspecting proxy: a CA bundle path mounted into the build.
ARG PIP_CERT
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies first, from the lock alone (every file checked against its hash): this layer is reused until
# the lock changes, and two builds install the same bytes.
COPY deploy/requirements/coordinator.txt /tmp/requirements.txt
RUN python3 -m venv /opt/pfeddc \
 && /opt/pfeddc/bin/pip install --require-hashes --no-deps -r /tmp/requirements.txt
COPY pyproject.toml README.md /src/
COPY protos /src/protos
COPY common /src/common
COPY server /src/server
# The distribution lists the client packages too: build it, then keep only server/ and common/.
COPY client /src/client
RUN /opt/pfeddc/bin/pip install --no-deps --no-build-isolation /src \
 && rm -rf /opt/pfeddc/lib/python3*/site-packages/pfeddc/client \
    /opt/pfeddc/bin/pfeddc-client /opt/pfeddc/bin/pfeddc-sim /opt/pfeddc/bin/pfeddc-partition \
 && /opt/pfeddc/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && find /opt/pfeddc -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="pfeddc-coordinator" \
      org.opencontainers.image.description="pfeddc coordinator: torch-free gRPC federation of CLIP prompts" \
      org.opencontainers.image.source="https://github.com/pfeddc/pfeddc" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE}"
# No pip in the runtime: remove the base image's own copy too.
RUN rm -rf /usr/local/lib/python3*/site-packages/pip /usr/local/lib/python3*/site-packages/pip-* \
    /usr/local/bin/pip* /usr/lib/python3/dist-packages/pip /usr/share/python-wheels \
    /usr/lib/python3*/ensurepip \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/pfeddc pfeddc \
 && mkdir -p /var/lib/pfeddc && chown pfeddc:pfeddc /var/lib/pfeddc
COPY --from=build /opt/pfeddc /opt/pfeddc
ENV PATH=/opt/pfeddc/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The allocator settings pfeddc-server also sets at start (server/ops/process.py), here from the first allocation:
# threads started before (numpy's OpenBLAS) then get no arena of their own (peak RSS at N=500: 313 MiB, 360 when
# set at start, 430 without).
ENV MALLOC_ARENA_MAX=1 MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_TOP_PAD_=67108864
USER 10001:10001
WORKDIR /var/lib/pfeddc
EXPOSE 50051 8081 9090
ENTRYPOINT ["pfeddc-server"]
CMD ["--state-dir", "/var/lib/pfeddc", "--bind", "0.0.0.0", "--port", "50051"]
