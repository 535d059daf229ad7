"""Token revocation that every replica sees at once (sign-out, key rotation and revocation).

Each replica caches token look-ups (`ctx.token_cache`). A write that revokes or shortens any token
also changes the shared *auth epoch* (a row of `app_state`) in the same transaction. Before using
its cache, a request learns the epoch from a read that began after the request arrived; if the
epoch moved, the cache is dropped. Such reads are shared: all requests that arrive while one read is
in flight wait for the next single read, so under load a replica makes about one small primary-key
read per database round trip, not one per request, and a revoked token is refused by every replica
from the moment the revoking write committed.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import delete, insert, select

from service.db.models import AppState
from service.ids import new_id

EPOCH_KEY = "auth_epoch"
state_t = AppState.__table__


async def bump_epoch(tx) -> None:
    await tx.conn.execute(delete(state_t).where(state_t.c.name == EPOCH_KEY))
    await tx.conn.execute(insert(state_t).values(name=EPOCH_KEY, value=new_id("ep")))


class EpochWatch:
    """Single-flight reads of the auth epoch: each caller gets a value read after it asked."""

    def __init__(self, engine):
        self.engine = engine
        self.seen: str | None = None  # the epoch the token cache was filled under
        self._next: asyncio.Future | None = None  # a read not yet started: later callers join it
        self._running = False
        self._loop = None

    async def current(self) -> str | None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, a restarted process): nothing carries over
            self._loop, self._next, self._running = loop, None, False
        future = self._next
        if future is None:
            future = self._next = loop.create_future()
            if not self._running:
                self._start()
        return await asyncio.shield(future)

    def _start(self) -> None:
        future, self._next = self._next, None
        self._running = True
        self._loop.create_task(self._read(future))

    async def _read(self, future: asyncio.Future) -> None:
        try:
            async with self.engine.connect() as conn:
                value = (await conn.execute(select(state_t.c.value).where(state_t.c.name == EPOCH_KEY))).scalar()
            future.set_result(value)
        except BaseException as exc:  # the waiters get the error (a 500 or 503), never a stale answer
            future.set_exception(exc)
        finally:
            self._running = False
            if self._next is not None:
                self._start()


def watch_of(ctx) -> EpochWatch:
    watch = ctx.extras.get("epoch_watch")
    if watch is None:
        watch = ctx.extras["epoch_watch"] = EpochWatch(ctx.engines.reader)
    return watch
