# syntax=docker/dockerfile:1
# One image for every jobreaper service; the subcommand picks the service:
#   docker run IMAGE watcher run | killer run | executor run | config run | topics create
# Build: docker build -t jobreaper:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# uv, pinned to the version the lock file is made with.
FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

# -- build: resolve exactly the lock file into a virtualenv ------------------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/jobreaper
WORKDIR /src
# Dependencies first (a layer that survives source changes), then the project itself.
# The lock file also covers the workspace's development tools (devtools/: the local
# stack, the demo); uv reads their pyproject.toml to check the lock, so it is mounted
# for the two syncs only. Nothing of devtools is copied, and --no-dev installs only
# jobreaper itself.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=bind,source=devtools/pyproject.toml,target=/src/devtools/pyproject.toml \
    uv sync --locked --no-dev --no-install-project
COPY schemas ./schemas
COPY core ./core
COPY services ./services
RUN --mount=type=bind,source=devtools/pyproject.toml,target=/src/devtools/pyproject.toml \
    uv sync --locked --no-dev --no-editable

# -- runtime: the virtualenv on a clean Python, no uv, no compilers ----------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 jobreaper \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin jobreaper
# Same base image as the build stage, so the venv's python symlink still points at it.
COPY --from=build /opt/jobreaper /opt/jobreaper
ENV PATH=/opt/jobreaper/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JOBREAPER_HTTP_HOST=0.0.0.0 \
    JOBREAPER_HTTP_PORT=8080
USER 10001:10001
EXPOSE 8080
# /healthz of the running service (liveness; readiness is /readyz). The port follows
# JOBREAPER_HTTP_PORT; python is used because the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('JOBREAPER_HTTP_PORT', '8080') + '/healthz', timeout=2)"]
ENTRYPOINT ["jobreaper"]
CMD ["--help"]
