"""One writer process for several HTTP processes: asks and confirms travel to it over a Unix socket.

On SQLite every process's writer takes the database's one write lock for its batch, so two HTTP
processes with a writer each take turns and commit half-size batches: pairs/s hardly moves while
the HTTP work, which would spread over the cores, waits behind it. With `serve --workers W` the
parent starts one writer process (`python -m service.ops.write_server`), and each HTTP process
sends it the redemptions' hot path, the fast path's asks and confirms once their caller is
authenticated: one frame each way, `[id, kind, caller, party_id, object_id, field, n, key,
digest]` out and `[id, status, body, replayed]` back (4-byte length, then JSON). The writer
process runs them through its own writer (`fastpath.redemption_write`, the very function an HTTP
process runs when it writes itself), so they share its batches.

Everything else an HTTP process writes goes through its own writer as before: the database's lock
and the ledger head serialise them with the writer process's batches, as they do between replicas.
When the writer process cannot be reached, an HTTP process writes itself (and tries the socket
again a second later); a request whose frame went out on a connection that then broke is answered
503 (it may have been applied: the client retries with its Idempotency-Key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from service.http.errors import Unavailable, error_answer, error_body

log = logging.getLogger("escrow.link")

RETRY_AFTER = 1.0  # seconds an HTTP process writes itself after it could not reach the writer process


def _frame(message: list) -> bytes:
    body = orjson.dumps(message)
    return len(body).to_bytes(4, "big") + body


class _Frames(asyncio.Protocol):
    """Splits the byte stream into frames and hands each decoded one to `on_message`."""

    def __init__(self):
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while len(buf) - start >= 4:
            n = int.from_bytes(buf[start : start + 4], "big")
            if len(buf) - start - 4 < n:
                break
            self.on_message(orjson.loads(memoryview(buf)[start + 4 : start + 4 + n]))
            start += 4 + n
        if start:
            del buf[:start]

    def on_message(self, message: list) -> None:
        raise NotImplementedError


class WriterLink:
    """An HTTP process's end: `call(write)` is the writer process's answer, or None when it cannot be
    reached (then the caller writes itself)."""

    def __init__(self, path: str):
        self.path = path
        self._protocol: _Client | None = None
        self._down_until = 0.0
        self._connecting: asyncio.Future | None = None
        self.sent = 0  # frames sent (tests: the writer process did the work)

    async def call(self, write: tuple) -> tuple[int, Any, bool] | None:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
            if protocol is None:
                return None
        self.sent += 1
        return await protocol.send(write)

    async def _connect(self) -> _Client | None:
        if time.monotonic() < self._down_until:
            return None
        if self._connecting is not None:  # another request is connecting: wait for it
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        protocol = None
        try:
            _, protocol = await loop.create_unix_connection(_Client, self.path)
        except OSError as exc:
            log.warning("writer process not reachable at %s (%s): this process writes itself", self.path, exc)
            self._down_until = time.monotonic() + RETRY_AFTER
        self._protocol = protocol
        self._connecting.set_result(protocol)
        self._connecting = None
        return protocol

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()


class _Client(_Frames):
    def __init__(self):
        super().__init__()
        self._waiting: dict[int, asyncio.Future] = {}
        self._next = 0
        self.lost = False

    def send(self, write: tuple) -> asyncio.Future:
        rid = self._next
        self._next += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self.transport.write(_frame([rid, *write]))
        return fut

    def on_message(self, message: list) -> None:
        rid, status, body, replayed = message
        fut = self._waiting.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_result((status, body, replayed))

    def connection_lost(self, exc) -> None:
        self.lost = True
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(
                    Unavailable(
                        "The connection to the writer broke; the request may have been applied. "
                        "Retry with the same Idempotency-Key.",
                        "writer_unavailable",
                    )
                )


class _Server(_Frames):
    """The writer process's end of one HTTP process's connection."""

    def __init__(self, ctx):
        super().__init__()
        self.ctx = ctx

    def on_message(self, message: list) -> None:
        asyncio.ensure_future(self._answer(message))

    async def _answer(self, message: list) -> None:
        from service.redemptions.fastpath import redemption_write

        rid = message[0]
        try:
            status, body, replayed = await redemption_write(self.ctx, *message[1:])
        except Exception as exc:  # a business error, or a logged 500: the answer the fast path gives
            status, code, text = error_answer(exc)
            body, replayed = error_body(code, text), False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame([rid, status, body, replayed]))


async def serve(ctx, path: str) -> asyncio.AbstractServer:
    """Answer the HTTP processes' writes on the Unix socket `path`."""
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: _Server(ctx), path)
