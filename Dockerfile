# The escrow service (预付保) image: migrates, then serves on port 8000 as a non-root user.
#
# It runs as PRODUCTION by default, and production refuses to start unless it is given real secrets
# and a database (the process exits at once with a message naming what is missing):
#   ESCROW_OPERATOR_TOKEN   random, at least 32 characters (e.g. `openssl rand -base64 33`)
#   ESCROW_PHONE_KEY        base64 of 32 random bytes: AES-GCM key for phone numbers at rest
#                           (e.g. `openssl rand -base64 32`)
#   ESCROW_SIGNING_KEY      Ed25519 private key, PEM, that signs ledger checkpoints
#                           (e.g. `openssl genpkey -algorithm ed25519`)
#   ESCROW_DATABASE_URL     postgresql://user:password@host:5432/db
# and for consumers' phone verification codes (SPEC §8), a real SMS gateway:
#   ESCROW_SMS_SENDER=http, ESCROW_SMS_URL, ESCROW_SMS_TOKEN, ESCROW_SMS_SIGN_NAME, ESCROW_SMS_TEMPLATE
# and, behind a reverse proxy or load balancer, the proxies whose X-Forwarded-For is believed:
#   ESCROW_TRUSTED_PROXIES  addresses or networks of the proxies (unset: the socket peer is the client)
# Keys generated into the data folder and a printed operator token are development conveniences:
# run `-e ESCROW_ENV=development` for that (a throw-away trial only).
#
# BASE is any Debian-like image with Python ≥ 3.11, its venv module and apt: the default is the
# official slim image; scripts/docker-smoke builds one from Debian's own packages (debootstrap) where
# no image registry is reachable, and passes it with --build-arg BASE=escrow-base:bookworm.
# Plain Dockerfile syntax: the legacy builder and BuildKit both build it.
ARG BASE=python:3.11-slim

# Build stage: a virtual environment (the same path in both stages, so its scripts keep working when
# copied) with the dependencies, then the project, compiling the ledger walk's C loop against
# OpenSSL's libcrypto. The runtime stage needs only libssl3, which both kinds of base already have.
FROM ${BASE} AS build
# Python's headers come with the official image; Debian's own Python has them in python3-dev.
RUN dev="gcc libc6-dev libssl-dev" \
 && python3 -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    || dev="$dev python3-dev" \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/escrow
ENV PATH=/opt/escrow/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# Dependencies in their own layer, so that a change to the code alone does not download them again.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "setuptools>=68" wheel
COPY setup.py README.md alembic.ini ./
COPY service ./service
COPY ledger ./ledger
COPY risk ./risk
COPY migrations ./migrations
RUN pip install --no-deps --no-build-isolation -e . && python3 -c "import ledger._walk"

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/escrow/bin:$PATH \
    ESCROW_ENV=production ESCROW_DATA_DIR=/data
COPY --from=build /opt/escrow /opt/escrow
COPY --from=build /app /app
WORKDIR /app
# The code stays root's and read-only to the service; only the data folder (0700) is the service's.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin escrow \
 && install -d -m 0700 -o escrow -g escrow /data
# A numeric user, so that an orchestrator's "run as non-root" check can see it is not root.
USER 10001:10001
VOLUME /data
EXPOSE 8000
# `escrow serve` checks the production settings before it touches the database, migrates, then runs
# uvicorn; liveness is GET /healthz.
CMD ["escrow", "serve", "--host", "0.0.0.0", "--port", "8000"]
