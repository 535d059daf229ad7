"""Alembic environment: async engines for SQLite and PostgreSQL.

Replicas may start together: on PostgreSQL an advisory lock lets one migrate while the others wait.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from service.core.settings import get_settings
from service.db.models import metadata

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

MIGRATION_LOCK = 727_100_001


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().effective_database_url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection) -> None:
    is_pg = connection.dialect.name == "postgresql"
    if is_pg:
        connection.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK})"))
    try:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=not is_pg)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if is_pg:
            connection.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            connection.commit()


async def run_async_migrations() -> None:
    url = database_url()
    if url.startswith("sqlite"):
        from pathlib import Path

        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
