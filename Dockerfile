# The escrow service: runs migrations, then uvicorn, as a non-root user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ESCROW_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY ledger ./ledger
COPY risk ./risk
COPY migrations ./migrations
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home /app escrow \
 && mkdir -p /data && chown escrow /data
USER escrow
VOLUME /data
EXPOSE 8000
CMD ["sh", "-c", "python -m service.cli migrate && exec uvicorn service.main:app --host 0.0.0.0 --port 8000 --no-access-log"]
