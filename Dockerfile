# syntax=docker/dockerfile:1.7
# One file for every image. `--build-arg SERVICE=<name>` picks what goes in:
#   --target service, SERVICE=members|matching|notifications|gateway: a service (`serve`, or `migrate`)
#   --target cli,     SERVICE=cli: the `techport` operator command (topics, DLQ replay, reindex)
# `make images` builds them all, with the names compose and the manifests use.
#
# Each image: the slim Python base, dependencies installed by uv from uv.lock (--frozen: exactly the locked
# versions), no uv, compiler or source tree in the final stage, a non-root user, a healthcheck.

# Base images are pinned by version here (literal FROM lines, so scanners and Dependabot can read them).
FROM ghcr.io/astral-sh/uv:0.9.7 AS uv

# ---- build: a virtual environment per image, from the lock file ------------------------------------------
FROM python:3.11.14-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Project metadata first: the dependency layer is rebuilt only when the lock or a pyproject changes.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY cli/pyproject.toml cli/
COPY dev/pyproject.toml dev/
COPY services/members/pyproject.toml services/members/
COPY services/matching/pyproject.toml services/matching/
COPY services/notifications/pyproject.toml services/notifications/
COPY services/gateway/pyproject.toml services/gateway/
ARG SERVICE
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "techport-${SERVICE}"
COPY shared/ shared/
COPY cli/ cli/
COPY dev/ dev/
COPY services/ services/
# --no-editable: the packages are copied into the environment, so the final image needs no source tree.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "techport-${SERVICE}"

# ---- runtime: what every image shares ---------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 techport \
    && useradd --system --uid 10001 --gid techport --home-dir /app --no-create-home techport
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"]

# ---- the images -----------------------------------------------------------------------------------------
FROM runtime AS service
ARG SERVICE
ENV TECHPORT_SERVICE=${SERVICE}
COPY --from=build /app/.venv /app/.venv
# exec: python replaces the shell as PID 1 and gets SIGTERM itself (graceful shutdown).
CMD ["sh", "-c", "exec python -m techport_${TECHPORT_SERVICE} serve"]

FROM runtime AS cli
COPY --from=build /app/.venv /app/.venv
HEALTHCHECK NONE
ENTRYPOINT ["techport"]
CMD ["--help"]
