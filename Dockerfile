# syntax=docker/dockerfile:1
# One image for every devtrust program; docker-compose.yml picks the command
# (`worker`, `beat`, `serve`, `db upgrade`, `jamf simulator`).

# -- build: tpm2-pytss has no wheel on PyPI, it compiles against the TSS2 headers --------
FROM python:3.11-slim AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libtss2-dev \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/devtrust
ENV PATH=/opt/devtrust/bin:$PATH

WORKDIR /src
# The tested versions, pinned with their hashes, then devtrust itself.
COPY deploy/requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY inventory inventory
COPY jamf jamf
COPY ceremony ceremony
COPY worker worker
RUN pip install --no-deps .

# -- run: the virtualenv, the TSS2 libraries, no compiler ---------------------------------
FROM python:3.11-slim

# libtss2-dev rather than the libtss2-* run-time packages one by one: their names change
# between Debian releases (t64), and it depends on every one tpm2-pytss loads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libtss2-dev \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/devtrust devtrust

COPY --from=build /opt/devtrust /opt/devtrust
ENV PATH=/opt/devtrust/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DEVTRUST_DATA_DIR=/var/lib/devtrust/data

USER devtrust
WORKDIR /var/lib/devtrust

ENTRYPOINT ["devtrust"]
CMD ["--help"]
