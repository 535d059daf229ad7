"""Idempotent writes (SPEC §5): the same key and body answer the first answer, doing nothing again.

The key is checked and stored inside the write's own transaction, so an answer is recorded if and
only if its effects committed. Keys are per caller and kept at least 24 hours.

For the quick operations (asks and confirms, service/redemptions/fastpath.py) the key is one of the operation's
declared reads: the writer reads every key of a batch in one statement before it takes the ledger
head and answers the stored ones at once (`replay`); the others are read again, with the run's
cards and redemptions, once it holds the head, and stored with the run's merged writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from service.db.writer import QuickOp, Reads, Tx
from service.http.context import AppContext
from service.http.errors import BadRequest, Conflict
from service.security.auth import Principal

Result = tuple[int, dict]
SECRET_FIELDS = ("api_key", "token", "secret")  # shown once; kept for a replay only encrypted


def fingerprint(request: Request, body: Any) -> str:
    payload = body.model_dump(mode="json") if hasattr(body, "model_dump") else body
    return fingerprint_of(request.method, request.url.path, payload)


def fingerprint_of(method: str, path: str, payload: Any) -> str:
    raw = method.encode() + b" " + path.encode() + b"\n" + orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


def idempotency_key(request: Request) -> str | None:
    return checked_key(request.headers.get("idempotency-key"))


def checked_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.", "bad_idempotency_key")
    return key


def json_response(status: int, body: dict, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def mutate(
    ctx: AppContext,
    request: Request,
    principal: Principal | None,
    body: Any,
    op: Callable[[Tx], Awaitable[Result]],
    caller: str | None = None,
) -> Response:
    """Run a write through the batching writer, honouring an Idempotency-Key if given."""
    key = idempotency_key(request)
    who = caller or (principal.caller if principal else "anonymous")
    digest = fingerprint(request, body) if key is not None else ""
    status, result, replayed = await run_write(ctx, who, key, digest, op)
    return json_response(status, result, replayed)


async def run_write(
    ctx: AppContext, who: str, key: str | None, digest: str, op: Callable[[Tx], Awaitable[Result]] | QuickOp
) -> tuple[int, dict, bool]:
    if key is None:
        status, result = await ctx.writer.run(op)
        return status, result, False

    def replay(row: tuple) -> tuple[Result, bool]:
        """The stored answer (request_hash, status_code, response_body) given again, or 409."""
        request_hash, status, body = row
        if request_hash != digest:
            raise Conflict("This Idempotency-Key was used with a different request.", "idempotency_key_reused")
        stored = orjson.loads(body)
        for name in SECRET_FIELDS:
            if name in stored:
                stored[name] = ctx.keys.phone.unseal(stored[name])
        return (status, stored), True

    async def idempotent(tx: Tx) -> tuple[Result, bool]:
        raw = tx.conn.raw
        row = raw.stored_key(who, key)
        if row is not None:
            return replay(row)
        status, result = await op(tx)
        kept = result
        if any(name in result for name in SECRET_FIELDS):
            kept = {**result, **{n: ctx.keys.phone.seal(result[n]) for n in SECRET_FIELDS if n in result}}
        raw.store_key(who, key, digest, status, orjson.dumps(kept).decode(), tx.now)
        return (status, result), False

    if isinstance(op, QuickOp):
        r = op.reads
        keyed = QuickOp(idempotent, Reads(card=r.card, redemption=r.redemption, key=(who, key)), replay)
        (status, result), replayed = await ctx.writer.run(keyed)
    else:
        (status, result), replayed = await ctx.writer.run(idempotent)
    return status, result, replayed
