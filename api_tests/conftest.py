"""Test harness: a real database (SQLite file, or PostgreSQL when ESCROW_TEST_DATABASE_URL says so),
migrated with Alembic once per session and emptied before each test; the app driven over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from service import migrate
from service.app import build_context, create_app
from service.db.models import metadata
from service.health.service import policy_cache
from service.settings import Settings

OPERATOR_TOKEN = "op_test_operator_token_0123456789abcdef"
TEST_DB_URL = os.environ.get("ESCROW_TEST_DATABASE_URL", "")


def _test_settings(data_dir: Path, **overrides) -> Settings:
    return Settings(env="test", data_dir=data_dir, database_url=TEST_DB_URL, operator_token=OPERATOR_TOKEN,
                    background_tasks=False, sqlite_synchronous="NORMAL", **overrides)


async def _recreate_pg_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url
    u = make_url(url.replace("postgresql+asyncpg", "postgresql"))
    admin = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                  database="postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{u.database}"')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def data_dir():
    with tempfile.TemporaryDirectory(prefix="escrow-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
async def ctx(data_dir):
    settings = _test_settings(data_dir)
    if not settings.is_sqlite:
        await _recreate_pg_database(settings.effective_database_url)
    await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
    context = build_context(settings)
    yield context
    await context.writer.stop()
    await context.engines.dispose()


@pytest.fixture(scope="session")
def app(ctx):
    return create_app(ctx=ctx)


TABLES = [t.name for t in reversed(metadata.sorted_tables)]


async def reset_database(ctx) -> None:
    async with ctx.engines.writer.begin() as conn:
        for name in TABLES:  # DELETE: far cheaper than TRUNCATE on PostgreSQL for small tables
            await conn.execute(text(f'DELETE FROM "{name}"'))
    ctx.writer.forget_state()
    ctx.token_cache.clear()
    policy_cache.forget()
    ctx.clock.offset = ctx.clock.offset * 0


@pytest.fixture
async def client(app, ctx):
    await reset_database(ctx)
    transport = httpx.ASGITransport(app=app, client=("10.9.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://escrow.test") as c:
        yield c


@pytest.fixture
def operator_headers():
    return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
