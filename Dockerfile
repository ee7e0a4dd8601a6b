# syntax=docker/dockerfile:1
#
# Two stages: the builder installs prefbudget and its runtime dependencies into
# /opt/venv with docker/install.sh (the same script CI runs), and the runtime
# stage copies only that virtual environment onto a fresh slim Python image.
# Every dependency ships manylinux wheels, so neither stage needs a compiler.
#
# One image serves every role; docker-compose.yml picks the command:
#   prefbudget db upgrade   one-shot migration to the Alembic head
#   prefbudget serve        the HTTP API (the default command)
#   prefbudget worker       a fit worker

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY docker/install.sh docker/install.sh
COPY solvers solvers
COPY migrations migrations
COPY app app
RUN sh docker/install.sh /opt/venv /src

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PREFBUDGET_HOST=0.0.0.0 \
    PREFBUDGET_PORT=8000
RUN groupadd --system --gid 10001 prefbudget \
    && useradd --system --uid 10001 --gid prefbudget --home-dir /home/prefbudget \
        --create-home --shell /usr/sbin/nologin prefbudget
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/prefbudget
EXPOSE 8000

# /readyz answers 200 once the database is reachable and the schema is at head.
# urllib keeps the check free of curl, which the slim image does not ship.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PREFBUDGET_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["prefbudget"]
CMD ["serve"]
