# The image of every Python service: one recipe, the member chosen by build arguments. Build
# from the repository root (the uv workspace), e.g.
#   docker build --build-arg MEMBER=api-gateway --build-arg MODULE=api_gateway \
#       --build-arg PORT=4000 -t infergate-api-gateway .
# MEMBER is the workspace member's directory, MODULE its import package (run as `python -m`),
# PORT the port it listens on. docker-compose.yml and .github/workflows/ci.yml pass all three.
# nginx has its own image (nginx/Dockerfile).

FROM python:3.11.14-slim-trixie AS builder
ARG MEMBER
ARG MODULE
ARG PORT
# Without them the COPY lines below would quietly copy the workspace root: fail here instead.
RUN test -n "${MEMBER}" && test -n "${MODULE}" && test -n "${PORT}" \
    || { echo "build with --build-arg MEMBER=... --build-arg MODULE=... --build-arg PORT=..." >&2; exit 1; }
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/
# Copy rather than hard-link (the cache is another filesystem), compile bytecode once at build
# time, and use the image's interpreter, never a downloaded one.
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Third-party dependencies first, from the lock alone: this layer is rebuilt when the lock or
# these manifests change, not on every source edit. --frozen installs uv.lock exactly as
# committed (and needs no other member's pyproject.toml): keep it current with `uv lock`.
COPY pyproject.toml uv.lock ./
COPY common/pyproject.toml common/
COPY ${MEMBER}/pyproject.toml ${MEMBER}/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package ${MEMBER} --no-install-workspace

# Then the service and the shared package, installed as wheels (not editable): the runtime
# stage needs the virtualenv only.
COPY common/src common/src
COPY ${MEMBER}/src ${MEMBER}/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package ${MEMBER} --no-editable \
    && /app/.venv/bin/python -c "import ${MODULE}.main"


FROM python:3.11.14-slim-trixie AS runtime
ARG MODULE
ARG PORT
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
# Owned by root, so the service user cannot rewrite its own code.
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=${PORT} \
    SERVICE_MODULE=${MODULE}
WORKDIR /app
USER 10001:10001
EXPOSE ${PORT}
# slim has no curl: probe the liveness endpoint with the interpreter that is already here.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=2)"]
# exec: the service itself is PID 1 and gets SIGTERM (its graceful shutdown), not the shell.
CMD ["/bin/sh", "-c", "exec python -m \"$SERVICE_MODULE\""]
