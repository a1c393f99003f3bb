# syntax=docker/dockerfile:1
# pgconn-agent container image (README.md, "Container image"; V is agent.__version__):
#   docker build --build-arg VERSION=V --build-arg REVISION="$(git rev-parse HEAD)" \
#       -t pgconn-agent:V .
#   or, from Debian packages only (buildah + mmdebstrap, no Docker engine): scripts/build-image.sh
#   docker run --rm -p 9188:9188 pgconn-agent:V run --dsn "host=db user=pgconn_agent"
#   docker run --rm -v ./config.toml:/etc/pgconn-agent/config.toml:ro pgconn-agent:V \
#       run --config /etc/pgconn-agent/config.toml
# Both stages use the same base so the virtualenv's interpreter path is valid in the final one:
# python:*-slim by default, or Debian's python3 (scripts/build-image.sh passes BASE_IMAGE).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/pgconn-agent
COPY pyproject.toml README.md LICENSE ./
COPY agent ./agent
# Every dependency ships manylinux wheels (psycopg[binary] bundles libpq): no compiler needed.
# pip is removed from the runtime environment afterwards.
RUN /opt/pgconn-agent/bin/pip install --only-binary=:all: . \
    && /opt/pgconn-agent/bin/pip uninstall -y pip setuptools

FROM ${BASE_IMAGE}
# The package version (agent/__init__.py) and the git commit the image is built from.
ARG VERSION=""
ARG REVISION=""
LABEL org.opencontainers.image.title="pgconn-agent" \
      org.opencontainers.image.description="Who holds your PostgreSQL connections: attribution and OpenTelemetry metrics" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/pgconn-agent/pgconn-agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Inside a container the HTTP server must listen on all interfaces to be scraped and probed.
# This is only the default: a config file's `listen`, --listen or PGCONN_AGENT_LISTEN win.
ENV PATH=/opt/pgconn-agent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PGCONN_AGENT_DEFAULT_LISTEN=0.0.0.0:9188
COPY --from=build /opt/pgconn-agent /opt/pgconn-agent
# A numeric, non-root user (no /etc/passwd entry needed; Kubernetes' runAsNonRoot can check it).
USER 10001:10001
WORKDIR /tmp
EXPOSE 9188
# /healthz says the process is alive: `pgconn-agent healthcheck` probes the listen address of
# PGCONN_AGENT_LISTEN, PGCONN_AGENT_CONFIG's file or the default, over HTTP or TLS (a web
# config's basic auth answers 401: alive). Give the config as PGCONN_AGENT_CONFIG rather than
# `run --config` so the health check reads the same file.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["pgconn-agent", "healthcheck"]
# The agent handles SIGTERM (final export, exit 0) and SIGHUP (reload) itself as PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pgconn-agent"]
CMD ["run"]
