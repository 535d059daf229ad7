# The escrow service: runs migrations, then uvicorn, as a non-root user.
# The build stage installs the project (compiling the ledger walk's C loop, which links OpenSSL's
# libcrypto); the runtime stage takes the installed result and needs only libssl3, which the Python
# image already has.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml setup.py README.md alembic.ini ./
COPY service ./service
COPY ledger ./ledger
COPY risk ./risk
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && python -c "import ledger._walk"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ESCROW_DATA_DIR=/data
COPY --from=build /usr/local /usr/local
COPY --from=build /app /app
WORKDIR /app
RUN useradd --system --uid 10001 --home /app escrow \
 && mkdir -p /data && chown escrow /data
USER escrow
VOLUME /data
EXPOSE 8000
CMD ["sh", "-c", "python -m service.cli migrate && exec uvicorn service.main:app --host 0.0.0.0 --port 8000 --no-access-log"]
