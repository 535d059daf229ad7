"""Test harness: a real database (SQLite file, or PostgreSQL when ESCROW_TEST_DATABASE_URL says so),
migrated with Alembic once per session and emptied before each test; the app driven over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import tempfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from service.app import asgi_app, build_context, create_app
from service.core.settings import Settings
from service.db.models import metadata
from service.health.service import policy_cache
from service.ops import migrate

OPERATOR_TOKEN = "op_test_operator_token_0123456789abcdef"
TEST_DB_URL = os.environ.get("ESCROW_TEST_DATABASE_URL", "")


def _test_settings(data_dir: Path, **overrides) -> Settings:
    return Settings(
        env="test",
        data_dir=data_dir,
        database_url=TEST_DB_URL,
        operator_token=OPERATOR_TOKEN,
        background_tasks=False,
        sqlite_synchronous="NORMAL",
        **overrides,
    )


async def _recreate_pg_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url.replace("postgresql+asyncpg", "postgresql"))
    admin = await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, database="postgres"
    )
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
    # Served as in production: the redemption fast path in front of FastAPI.
    transport = httpx.ASGITransport(app=asgi_app(app), client=("10.9.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://escrow.test") as c:
        yield c


@pytest.fixture
def operator_headers():
    return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


# ---------------------------------------------------------------------------------------------
# Reliability summary: the reliability tests record what they tried; one line at the end of the run.
# ---------------------------------------------------------------------------------------------

RELIABILITY: dict[str, int] = {}
RELIABILITY_MODULES = {
    "test_crash_safety.py",
    "test_contention.py",
    "test_backup.py",
    "test_schemathesis.py",
    "test_authz_matrix.py",
    "test_hostile_input.py",
}
RELIABILITY_ORDER = (
    "kills",
    "requests",
    "successes checked",
    "lost answers retried",
    "fuzz cases",
    "fuzz requests",
    "matrix cells",
    "hostile inputs per field",
    "hostile requests",
    "backup restores",
    "tampered backups refused",
    "two-process ledger entries",
    "client-timeout retries",
)
_reliability_failed: set[str] = set()


def record(name: str, n: int) -> None:
    """Add n to the session-wide reliability figure `name` (printed in the run's last summary line)."""
    RELIABILITY[name] = RELIABILITY.get(name, 0) + n


@pytest.fixture
def rng(request) -> random.Random:
    """A random.Random for a test that draws its own history; its seed is printed if the test fails
    (rerun it with ESCROW_TEST_SEED=<seed>)."""
    seed = int(os.environ.get("ESCROW_TEST_SEED") or secrets.randbits(64))
    request.node.random_seed = seed
    return random.Random(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    seed = getattr(item, "random_seed", None)
    if seed is not None and report.failed:
        report.sections.append(("random seed", f"{seed}  (rerun with ESCROW_TEST_SEED={seed})"))


def pytest_runtest_logreport(report):
    if report.failed and report.nodeid.split("::")[0].rsplit("/", 1)[-1] in RELIABILITY_MODULES:
        _reliability_failed.add(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    if not RELIABILITY and not _reliability_failed:
        return
    keys = [k for k in RELIABILITY_ORDER if k in RELIABILITY] + [k for k in RELIABILITY if k not in RELIABILITY_ORDER]
    figures = ", ".join(f"{RELIABILITY[k]} {k}" for k in keys)
    verdict = f"FAILURES: {len(_reliability_failed)}" if _reliability_failed else "nothing lost"
    database = "PostgreSQL" if TEST_DB_URL else "SQLite"
    terminalreporter.write_line(f"reliability [{database}]: {figures or 'nothing recorded'}; {verdict}")
