"""Token revocation that every replica sees at once (sign-out, key rotation and revocation).

Each replica caches token look-ups (`ctx.token_cache`). A write that revokes or shortens any token
also changes the shared *auth epoch* (a row of `app_state`) in the same transaction. Before using
its cache, a request learns the epoch from a read that began after the request arrived; if the
epoch moved, the cache is dropped. So a revoked token is refused by every replica from the moment
the revoking write committed. The read is made cheap (see `EpochWatch`): on SQLite it is skipped
while the database provably has not changed since the last one (no commit by any connection of any
process); on PostgreSQL the requests that arrive while one read is in flight share the next single read.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import sqlite3

from service.core.ids import new_id
from service.system import repository

EPOCH_KEY = "auth_epoch"


async def bump_epoch(tx) -> None:
    await repository.put(tx.conn, EPOCH_KEY, new_id("ep"))


# SQLite's WAL index (the `-shm` file every connection to a WAL database maps; https://sqlite.org/walformat.html)
# begins with two copies of its 48-byte header. A committing connection rewrites both (the second copy
# first), with a change counter, the last valid frame and checksums in them, before its COMMIT returns;
# readers compare the two copies to know the header is whole. Identical headers at two moments mean no
# transaction committed between them, by any connection of any process.
_WAL_HEADER = 48
_WAL_INDEX_MIN = 2 * _WAL_HEADER + 40  # both copies and the checkpoint information after them


class EpochWatch:
    """Reads of the auth epoch, each begun after its caller asked, made cheap for the hot path.

    SQLite: one autocommit connection of our own, read on the event loop's thread (no hop to a
    thread). Before reading, the WAL index header is looked at in shared memory (a memory read: no
    system call, the GIL kept); if it is byte for byte the header seen just before the last read,
    nothing has committed since, anywhere, so that read's value is still the epoch and is returned
    without a statement. Any doubt (no WAL index, a header being rewritten, not initialised) means a
    read, as before. PostgreSQL: one asyncpg connection of our own and single-flight reads, so
    concurrent requests share one round trip.
    """

    SQL = "SELECT value FROM app_state WHERE name = 'auth_epoch'"

    def __init__(self, url: str):
        self.seen: str | None = None  # the epoch the token cache was filled under
        self.sqlite_path = url.split(":///", 1)[1] if url.startswith("sqlite") else None
        self.dsn = "postgresql://" + url.split("://", 1)[1]
        self._sqlite = None
        self._shm: mmap.mmap | None = None  # the WAL index, mapped read-only once our connection has it open
        self._header: bytes | None = None  # the WAL index header seen just before the last read
        self._value: str | None = None  # what that read gave
        self.reads = 0  # statements sent (tests and benchmarks look)
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
        header = self._wal_header()
        if header is not None and header == self._header:
            return self._value  # nothing committed since that read (which began after the header was seen)
        row = self._sqlite.execute(self.SQL).fetchone()
        self.reads += 1
        self._header, self._value = header, (row[0] if row else None)
        if self._shm is None:
            self._map_wal_index()
        return self._value

    def _wal_header(self) -> bytes | None:
        """The WAL index header now, or None when there is none to trust (then the epoch is read)."""
        if self._shm is None:
            return None
        both = self._shm[: 2 * _WAL_HEADER]
        first = both[:_WAL_HEADER]
        if first != both[_WAL_HEADER:] or not first[12]:  # being rewritten, or not initialised (isInit)
            return None
        return first

    def _map_wal_index(self) -> None:
        """Map the WAL index once our connection has read: while that connection is open, SQLite
        neither resets nor removes the file (it does so only when no connection has it). No WAL index
        (another journal mode): no mapping, every request reads."""
        self._shm = _wal_index(self.sqlite_path + "-shm")

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
        self._shm = None  # not closed: see _wal_index
        self._header = None
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            self._pg.terminate()
            self._pg = None


# The WAL indexes mapped by this process, by file identity, kept open for the life of the process. SQLite
# locks the file with POSIX record locks, which belong to the process: closing *any* descriptor of the
# file (ours, or the one an mmap object holds) would drop every lock this process's SQLite connections
# hold on it, and another process could then reset the file under them (and under our mapping).
_MAPPED: dict[tuple[int, int], tuple[int, mmap.mmap | None]] = {}


def _wal_index(path: str) -> mmap.mmap | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_size < _WAL_INDEX_MIN:
        return None
    known = _MAPPED.get((st.st_dev, st.st_ino))
    if known is not None:
        return known[1]
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
            raise OSError("the WAL index was replaced")
        mapped = mmap.mmap(fd, _WAL_INDEX_MIN, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        _MAPPED[(st.st_dev, st.st_ino)] = (fd, None)  # the descriptor kept open all the same
        return None
    _MAPPED[(st.st_dev, st.st_ino)] = (fd, mapped)
    return mapped


def watch_of(ctx) -> EpochWatch:
    watch = ctx.extras.get("epoch_watch")
    if watch is None:
        watch = ctx.extras["epoch_watch"] = EpochWatch(ctx.settings.effective_database_url)
    return watch
