# syntax=docker/dockerfile:1
#
# Image of the Twente hub: one image, three services, chosen by the command
# (`hub run ingest|matcher|notifier`, `hub topics create`, `hub db upgrade`).

# ---- builder: install the project and its dependencies into a venv ------------------------
FROM python:3.11-slim AS builder

# A compiler for any dependency that has no wheel for this platform; it stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel

WORKDIR /src
# README.m[d] matches README.md when it exists (pyproject's `readme`) and nothing otherwise.
COPY pyproject.toml README.m[d] ./
COPY services/ services/
RUN pip install .

# ---- final: the venv, the Avro schemas, the rules, a non-root user ------------------------
FROM python:3.11-slim

# The Avro schemas and the rules file live at the repository root, not inside the installed
# package: copy them and point the settings at the copies.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HUB_SCHEMAS_DIR=/app/schemas \
    HUB_MATCHER_RULES_FILE=/app/rules/baseline.yaml

RUN groupadd --system --gid 10001 hub \
    && useradd --system --uid 10001 --gid hub --home-dir /app --shell /usr/sbin/nologin hub \
    && install -d -o hub -g hub /app

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Owned by root: the services only read the schemas and the rules.
COPY schemas/ /app/schemas/
COPY rules/ /app/rules/

USER 10001:10001

EXPOSE 8001 8002 8003
# No HEALTHCHECK here: the image runs three services on three ports and the one-shot jobs, so
# no single check fits. docker-compose.yml checks each service's /readyz on its own port.
ENTRYPOINT ["hub"]
CMD ["--help"]
