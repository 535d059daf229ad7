"""A direct route for the two requests of every redemption: the merchant's ask and the consumer's confirm.

At the counter these two are most of the traffic, and FastAPI's routing, dependency solving and
validation cost several times the work the escrow itself does for them. This ASGI layer answers the
well-formed ones itself, with the routes' own request models (so their limits), the same service
functions, the same idempotency records and the same error bodies; anything unusual (another content
type, a body that does not parse or validate, an oversize body, a bad Idempotency-Key) is handed,
untouched, to the FastAPI app, which gives its usual answer. The routes stay declared in FastAPI, so
the OpenAPI document describes them, and a request behaves the same whichever way it goes.
"""

from __future__ import annotations

from pydantic import ValidationError

from service.cards.schemas import EmptyBody, RedemptionAsk
from service.db.writer import QuickOp, Reads
from service.http.errors import BadRequest, error_answer, error_body
from service.http.middleware import MAX_BODY, send_json
from service.redemptions import service as redemptions
from service.security.auth import authenticate_header, check_role
from service.security.idempotency import checked_key, fingerprint_of, run_write

# The request models of the two FastAPI routes (cards/router.py ask_redemption, redemptions/router.py
# confirm): the fast path validates with them, so its limits are theirs (api_tests/test_fastpath_parity.py
# checks that the routes still declare these models).
ASK_BODY = RedemptionAsk
CONFIRM_BODY = EmptyBody


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
        """(status, body, replayed) for a request the fast path can judge, else None."""
        kind, object_id = route
        payload = _payload(kind, headers.get(b"content-type", b""), body)
        if payload is None:
            return None
        raw_key = headers.get(b"idempotency-key")
        try:
            key = checked_key(raw_key.decode("latin-1")) if raw_key is not None else None
        except BadRequest:
            return None
        ctx = self.fastapi_app.state.ctx
        try:
            auth = headers.get(b"authorization")
            principal = await authenticate_header(auth.decode("latin-1") if auth else None, ctx)
            if kind == "ask":
                who = check_role(principal, ("merchant",))
                field, n = next((name, n) for name, n in payload.items() if n is not None)
                hold_minutes = ctx.settings.hold_minutes

                async def ask(tx):
                    return 201, await redemptions.ask(tx, who.party_id, object_id, field, n, hold_minutes)

                op = QuickOp(ask, Reads(card=object_id))
                path = f"/v1/cards/{object_id}/redemptions"
            else:
                who = check_role(principal, ("consumer",))

                async def confirm(tx):
                    return 200, await redemptions.confirm(tx, who.party_id, object_id)

                op = QuickOp(confirm, Reads(redemption=object_id))
                path = f"/v1/redemptions/{object_id}/confirm"
            digest = fingerprint_of("POST", path, payload) if key is not None else ""
            return await run_write(ctx, who.caller, key, digest, op)
        except Exception as exc:  # a business error, or a logged 500: the body FastAPI's handlers give
            status, code, message = error_answer(exc)
            return status, error_body(code, message), False


def _payload(kind: str, content_type: bytes, body: bytes) -> dict | None:
    """The body as the route's model reads it (its `model_dump`, what FastAPI's idempotency fingerprint
    sees), or None for a body the fast path leaves to FastAPI: another content type, one the model
    refuses, an ask without exactly one of amount, uses, periods (the route's own 422)."""
    if kind == "confirm" and not body:
        return {}  # the confirm's body is optional
    if content_type.split(b";")[0].strip().lower() != b"application/json":
        return None
    known = _VALIDATED.get((kind, body))
    if known is not None:
        return dict(known)  # a copy: the answer is the caller's to keep
    try:
        payload = (ASK_BODY if kind == "ask" else CONFIRM_BODY).model_validate_json(body).model_dump(mode="json")
    except ValidationError:
        return None
    if kind == "ask" and sum(n is not None for n in payload.values()) != 1:
        return None
    if len(body) <= _VALIDATED_BODY_MAX:
        if len(_VALIDATED) >= _VALIDATED_MAX:
            _VALIDATED.clear()
        _VALIDATED[(kind, body)] = dict(payload)
    return payload


# Bodies the request models accepted, with what they read: counters send the same few bodies ({"uses":1})
# over and over, and the model's answer depends on the bytes alone. Only accepted bodies are kept (a
# refused one is handed to FastAPI, which validates it again anyway), small ones, a bounded number.
_VALIDATED: dict[tuple[str, bytes], dict] = {}
_VALIDATED_MAX = 1024
_VALIDATED_BODY_MAX = 256


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
