"""Engines for SQLite (default, WAL) and PostgreSQL, with the same code on both.

Reads go through async engines (aiosqlite, asyncpg). Writes go through one synchronous connection
per process, owned by the writer's thread (pysqlite, psycopg): a write batch then costs no thread
hop per statement. On SQLite the writer opens `BEGIN IMMEDIATE`, so a batch holds the database's
one write lock from its first statement (no lock-upgrade deadlocks between replicas); readers open
deferred transactions and never wait for the writer thanks to WAL.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.core.settings import Settings


@dataclass
class Engines:
    reader: AsyncEngine
    writer: AsyncEngine  # for maintenance and tests; the service writes through `sync_writer`
    sync_writer: Engine
    sync_reader: Engine  # short reads done on a worker thread in one hop (ledger proofs)
    is_sqlite: bool

    async def dispose(self) -> None:
        await self.reader.dispose()
        if self.writer is not self.reader:
            await self.writer.dispose()
        self.sync_writer.dispose()
        self.sync_reader.dispose()


def _begin_immediate_spinning(dbapi_connection) -> None:
    """BEGIN IMMEDIATE, retried every half millisecond while another process holds the write lock.

    SQLite's own busy handler sleeps 1, 2, 5, 10 … 100 ms between tries: with two replicas on one
    file, each would idle through most of the other's short write batches."""
    deadline = time.monotonic() + 30.0
    cur = dbapi_connection.cursor()
    try:
        while True:
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.0005)
    finally:
        cur.close()


def _sqlite_setup(engine, settings: Settings, begin: str, spin: bool = False) -> None:
    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(target, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, emit BEGIN: savepoints and BEGIN IMMEDIATE need it.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=0" if spin else "PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(target, "begin")
    def _on_begin(conn):
        if spin:
            _begin_immediate_spinning(conn.connection.dbapi_connection)
        else:
            conn.exec_driver_sql(begin)


def sync_url(url: str) -> str:
    if url.startswith("sqlite+aiosqlite"):
        return "sqlite+pysqlite" + url[len("sqlite+aiosqlite") :]
    if url.startswith("postgresql+asyncpg"):
        return "postgresql+psycopg" + url[len("postgresql+asyncpg") :]
    return url


def make_engines(settings: Settings) -> Engines:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        writer = create_async_engine(url, pool_size=1, max_overflow=1)
        _sqlite_setup(writer, settings, "BEGIN IMMEDIATE")
        reader = create_async_engine(url, pool_size=8, max_overflow=8)
        _sqlite_setup(reader, settings, "BEGIN")
        sync_writer = create_engine(sync_url(url), pool_size=1, max_overflow=1)
        _sqlite_setup(sync_writer, settings, "BEGIN IMMEDIATE", spin=True)
        sync_reader = create_engine(sync_url(url), pool_size=4, max_overflow=4)
        _sqlite_setup(sync_reader, settings, "BEGIN")
        return Engines(reader=reader, writer=writer, sync_writer=sync_writer, sync_reader=sync_reader, is_sqlite=True)
    engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    # The writer's connection is not pinged at checkout (a round trip per batch); the writer runs a
    # batch again on a new connection when the first statements find the pooled one dead.
    sync_writer = create_engine(sync_url(url), pool_size=2, max_overflow=2)
    sync_reader = create_engine(sync_url(url), pool_size=4, max_overflow=4, pool_pre_ping=True)
    return Engines(reader=engine, writer=engine, sync_writer=sync_writer, sync_reader=sync_reader, is_sqlite=False)
