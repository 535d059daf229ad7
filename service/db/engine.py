"""Engines for SQLite (default, WAL) and PostgreSQL, with the same code on both.

SQLite gets two engines on one file: writers open `BEGIN IMMEDIATE` so a write batch holds the
database's one write lock from its first statement (no lock upgrade deadlocks between replicas),
readers open deferred transactions and never wait for the writer thanks to WAL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.settings import Settings


@dataclass
class Engines:
    reader: AsyncEngine
    writer: AsyncEngine
    is_sqlite: bool

    async def dispose(self) -> None:
        await self.reader.dispose()
        if self.writer is not self.reader:
            await self.writer.dispose()


def _sqlite_engine(url: str, settings: Settings, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, emit BEGIN: savepoints and BEGIN IMMEDIATE need it.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(begin)

    return engine


def make_engines(settings: Settings) -> Engines:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        writer = _sqlite_engine(url, settings, "BEGIN IMMEDIATE", 1)
        reader = _sqlite_engine(url, settings, "BEGIN", 8)
        return Engines(reader=reader, writer=writer, is_sqlite=True)
    engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    return Engines(reader=engine, writer=engine, is_sqlite=False)
