# The coordinator image: the base install only (no torch, no transformers, no client code), non-root, no secrets.
#   buildah bud -f deploy/coordinator.Dockerfile -t pfeddc-coordinator .     (or docker build)
ARG BASE=python:3.11-slim
FROM ${BASE}
# Build-time only, for networks behind a TLS-inspecting proxy: a CA bundle path mounted into the build.
ARG PIP_CERT
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md /src/
COPY protos /src/protos
COPY common /src/common
COPY server /src/server
COPY client /src/client
# The distribution carries the client too; the coordinator image keeps only server/ and common/.
RUN python3 -m venv /opt/pfeddc \
 && /opt/pfeddc/bin/pip install /src \
 && rm -rf /src /opt/pfeddc/lib/python3*/site-packages/pfeddc/client \
    /opt/pfeddc/bin/pfeddc-client /opt/pfeddc/bin/pfeddc-sim /opt/pfeddc/bin/pfeddc-partition \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/pfeddc pfeddc \
 && mkdir -p /var/lib/pfeddc && chown pfeddc:pfeddc /var/lib/pfeddc
ENV PATH=/opt/pfeddc/bin:$PATH
USER 10001:10001
WORKDIR /var/lib/pfeddc
EXPOSE 50051
ENTRYPOINT ["pfeddc-server"]
CMD ["--state-dir", "/var/lib/pfeddc", "--bind", "0.0.0.0", "--port", "50051"]
