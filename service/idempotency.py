"""Idempotent writes (SPEC §5): the same key and body answer the first answer, doing nothing again.

The key is checked and stored inside the write's own transaction, so an answer is recorded if and
only if its effects committed. Keys are per caller and kept at least 24 hours.
"""

from __future__ import annotations

import hashlib
from typing import Any, Awaitable, Callable

import orjson
from fastapi import Request
from fastapi.responses import Response

from service.auth import Principal
from service.context import AppContext
from service.db.models import IdempotencyKey
from service.db.writer import Tx, prefetching
from service.errors import BadRequest, Conflict

keys_t = IdempotencyKey.__table__

Result = tuple[int, dict]
SECRET_FIELDS = ("api_key", "token")  # shown once; kept for a replay only encrypted


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


async def mutate(ctx: AppContext, request: Request, principal: Principal | None, body: Any,
                 op: Callable[[Tx], Awaitable[Result]], caller: str | None = None) -> Response:
    """Run a write through the batching writer, honouring an Idempotency-Key if given."""
    key = idempotency_key(request)
    who = caller or (principal.caller if principal else "anonymous")
    digest = fingerprint(request, body) if key is not None else ""
    status, result, replayed = await run_write(ctx, who, key, digest, op)
    return json_response(status, result, replayed)


async def run_write(ctx: AppContext, who: str, key: str | None, digest: str,
                    op: Callable[[Tx], Awaitable[Result]]) -> tuple[int, dict, bool]:
    if key is None:
        status, result = await ctx.writer.run(op)
        return status, result, False

    async def idempotent(tx: Tx) -> tuple[Result, bool]:
        raw = tx.conn.raw
        row = raw.one("SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE caller = ? AND key = ?",
                      (who, key))
        if row is not None:
            if row[0] != digest:
                raise Conflict("This Idempotency-Key was used with a different request.", "idempotency_key_reused")
            stored = orjson.loads(row[2])
            for name in SECRET_FIELDS:
                if name in stored:
                    stored[name] = ctx.keys.phone.unseal(stored[name])
            return (row[1], stored), True
        status, result = await op(tx)
        kept = result
        if any(name in result for name in SECRET_FIELDS):
            kept = {**result, **{n: ctx.keys.phone.seal(result[n]) for n in SECRET_FIELDS if n in result}}
        raw.run("INSERT INTO idempotency_keys (caller, key, request_hash, status_code, response_body, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (who, key, digest, status, orjson.dumps(kept).decode(), raw.t(tx.now)))
        return (status, result), False

    reads = getattr(op, "reads", None)
    if reads is not None:
        prefetching(idempotent, reads)
    (status, result), replayed = await ctx.writer.run(idempotent)
    return status, result, replayed
