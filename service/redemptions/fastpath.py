"""A direct route for the two requests of every redemption: the merchant's ask and the consumer's confirm.

At the counter these two are most of the traffic, and FastAPI's routing, dependency solving and
validation cost several times the work the escrow itself does for them. This ASGI layer answers
the well-formed ones itself, with the same rules, the same service functions, the same idempotency
records and the same error bodies; anything unusual (another content type, a body that does not
parse or validate, an oversize body, a bad Idempotency-Key) is handed, untouched, to the FastAPI
app, which gives its usual answer. The routes stay declared in FastAPI, so the OpenAPI document
describes them, and a request behaves the same whichever way it goes.
"""

from __future__ import annotations

import orjson

from service.auth import authenticate_header, check_role
from service.db.writer import QuickOp, Reads
from service.errors import BadRequest, error_answer, error_body
from service.idempotency import checked_key, fingerprint_of, run_write
from service.middleware import send_json
from service.redemptions import service as redemptions

MAX_BODY = 64 * 1024
UNITS = ("amount", "uses", "periods")
LIMITS = {"amount": 10**12, "uses": 100_000, "periods": 1000}


def _plain_id(value: str) -> bool:
    """Ids are letters, digits and underscores; anything else is left to FastAPI's usual answer."""
    return len(value) <= 64 and value.isascii() and value.replace("_", "").isalnum()


def _route(path: str) -> tuple[str, str] | None:
    parts = path.split("/")
    # /v1/cards/{id}/redemptions  or  /v1/redemptions/{id}/confirm
    if len(parts) == 5 and parts[1] == "v1" and _plain_id(parts[3]):
        if parts[2] == "cards" and parts[4] == "redemptions":
            return "ask", parts[3]
        if parts[2] == "redemptions" and parts[4] == "confirm":
            return "confirm", parts[3]
    return None


def _ask_units(body: bytes):
    """(field, units) for a well-formed ask body, else None (FastAPI then answers it)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not set(data) <= set(UNITS):
        return None
    given = [(k, v) for k, v in data.items() if v is not None]
    if len(given) != 1:
        return None
    name, value = given[0]
    if type(value) is not int or not 1 <= value <= LIMITS[name]:
        return None
    return name, value


class RedemptionFastPath:
    def __init__(self, app, fastapi_app):
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        route = _route(scope["path"])
        if route is None or scope.get("query_string"):
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope["headers"]:
            if name in (b"authorization", b"content-type", b"idempotency-key", b"content-length"):
                headers[name] = value
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return await self.app(scope, receive, send)
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay(chunks, message), send)
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > MAX_BODY:
                return await self.app(scope, _replay(chunks, None, receive), send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        answer = await self._answer(route, headers, body)
        if answer is None:  # not ours to judge: FastAPI answers it as usual
            return await self.app(scope, _replay([body], None), send)
        status, payload, replayed = answer
        await send_json(send, status, payload, ((b"idempotent-replayed", b"true"),) if replayed else ())

    async def _answer(self, route, headers: dict, body: bytes):
        kind, object_id = route
        ctx = self.fastapi_app.state.ctx
        is_json = headers.get(b"content-type", b"").split(b";")[0].strip().lower() == b"application/json"
        if kind == "ask":
            if not is_json:
                return None
            units = _ask_units(body)
            if units is None:
                return None
            payload = {"amount": None, "uses": None, "periods": None, units[0]: units[1]}
        else:
            if body and not (is_json and body.strip() == b"{}"):
                return None
            payload = {}
        try:
            raw_key = headers.get(b"idempotency-key")
            try:
                key = checked_key(raw_key.decode("latin-1")) if raw_key is not None else None
            except BadRequest:
                return None
            auth = headers.get(b"authorization")
            if kind == "ask":
                who = check_role(
                    await authenticate_header(auth.decode("latin-1") if auth else None, ctx), ("merchant",)
                )
                field, n = units
                hold_minutes = ctx.settings.hold_minutes

                async def ask(tx):
                    return 201, await redemptions.ask(tx, who.party_id, object_id, field, n, hold_minutes)

                op = QuickOp(ask, Reads(card=object_id))
                path = f"/v1/cards/{object_id}/redemptions"
            else:
                who = check_role(
                    await authenticate_header(auth.decode("latin-1") if auth else None, ctx), ("consumer",)
                )

                async def confirm(tx):
                    return 200, await redemptions.confirm(tx, who.party_id, object_id)

                op = QuickOp(confirm, Reads(redemption=object_id))
                path = f"/v1/redemptions/{object_id}/confirm"
            digest = fingerprint_of("POST", path, payload) if key is not None else ""
            return await run_write(ctx, who.caller, key, digest, op)
        except Exception as exc:  # a business error, or a logged 500: the body FastAPI's handlers give
            status, code, message = error_answer(exc)
            return status, error_body(code, message), False


def _replay(chunks: list[bytes], final, receive=None):
    """A `receive` that hands the app the body already read, then whatever comes next."""
    pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": receive is not None}]

    async def replay():
        if pending:
            return pending.pop()
        if final is not None:
            return final
        if receive is not None:
            return await receive()
        return {"type": "http.disconnect"}

    return replay
