"""Token revocation that every replica sees at once (sign-out, key rotation and revocation).

Each replica caches token look-ups (`ctx.token_cache`). A write that revokes or shortens any token
also changes the shared *auth epoch* (a row of `app_state`) in the same transaction. Before using
its cache, a request learns the epoch from a read that began after the request arrived; if the
epoch moved, the cache is dropped. So a revoked token is refused by every replica from the moment
the revoking write committed. The read is made cheap (see `EpochWatch`): on PostgreSQL the requests
that arrive while one read is in flight share the next single read.
"""

from __future__ import annotations

import asyncio
import sqlite3

from sqlalchemy import delete, insert

from service.core.ids import new_id
from service.db.models import AppState

EPOCH_KEY = "auth_epoch"
state_t = AppState.__table__


async def bump_epoch(tx) -> None:
    await tx.conn.execute(delete(state_t).where(state_t.c.name == EPOCH_KEY))
    await tx.conn.execute(insert(state_t).values(name=EPOCH_KEY, value=new_id("ep")))


class EpochWatch:
    """Reads of the auth epoch, each begun after its caller asked, made cheap for the hot path.

    SQLite: one autocommit connection of our own read on the event loop's thread (a primary-key
    read in WAL mode is a few microseconds and never waits for a writer: cheaper than any hop to a
    thread). PostgreSQL: one asyncpg connection of our own and single-flight reads, so concurrent
    requests share one round trip.
    """

    SQL = "SELECT value FROM app_state WHERE name = 'auth_epoch'"

    def __init__(self, url: str):
        self.seen: str | None = None  # the epoch the token cache was filled under
        self.sqlite_path = url.split(":///", 1)[1] if url.startswith("sqlite") else None
        self.dsn = "postgresql://" + url.split("://", 1)[1]
        self._sqlite = None
        self._pg = None
        self._next: asyncio.Future | None = None  # a read not yet started: later callers join it
        self._running = False
        self._loop = None

    async def current(self) -> str | None:
        if self.sqlite_path is not None:
            return self._read_sqlite()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, a restarted process): nothing carries over
            if self._pg is not None:
                self._pg.terminate()
            self._loop, self._next, self._running, self._pg = loop, None, False, None
        future = self._next
        if future is None:
            future = self._next = loop.create_future()
            if not self._running:
                self._start()
        return await asyncio.shield(future)

    def _read_sqlite(self) -> str | None:
        if self._sqlite is None:
            self._sqlite = sqlite3.connect(self.sqlite_path, isolation_level=None, check_same_thread=False)
            self._sqlite.execute("PRAGMA busy_timeout=5000")
        row = self._sqlite.execute(self.SQL).fetchone()
        return row[0] if row else None

    def _start(self) -> None:
        future, self._next = self._next, None
        self._running = True
        self._loop.create_task(self._read_pg(future))

    async def _read_pg(self, future: asyncio.Future) -> None:
        try:
            if self._pg is None or self._pg.is_closed():
                import asyncpg

                self._pg = await asyncpg.connect(self.dsn, statement_cache_size=8)
            future.set_result(await self._pg.fetchval(self.SQL))
        except BaseException as exc:  # the waiters get the error (a 500 or 503), never a stale answer
            if self._pg is not None:
                self._pg.terminate()
                self._pg = None
            future.set_exception(exc)
        finally:
            self._running = False
            if self._next is not None:
                self._start()

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            self._pg.terminate()
            self._pg = None


def watch_of(ctx) -> EpochWatch:
    watch = ctx.extras.get("epoch_watch")
    if watch is None:
        watch = ctx.extras["epoch_watch"] = EpochWatch(ctx.settings.effective_database_url)
    return watch
