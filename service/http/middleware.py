"""Refuse oversize bodies before they are read into memory (a clean 413, never a crash), and a NUL
character in the URL (PostgreSQL text cannot hold U+0000: a clean 422, not a failed query)."""

from __future__ import annotations

import orjson

from service.http.errors import error_body

MAX_BODY = 64 * 1024  # bytes: the largest request body the API reads (this middleware, the redemption fast path)


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int = MAX_BODY):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            return await _send_error(send, 422, "invalid_field", "The URL must not contain the NUL character (U+0000).")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    return await self._refuse(send)
        received = 0
        too_large = False
        started = False

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            # The framework turns any error while reading the body into its own 400; a body cut off
            # for size is answered with the 413 below instead.
            if too_large and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send):
        await _send_error(send, 413, "body_too_large", f"The body is larger than {self.max_bytes} bytes.")


async def _send_error(send, status: int, code: str, message: str) -> None:
    await send_json(send, status, error_body(code, message))


async def send_json(send, status: int, payload: dict, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer a plain ASGI request with a JSON body (for the layers that answer in front of FastAPI)."""
    body = orjson.dumps(payload)
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
