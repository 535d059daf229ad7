from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import StringConstraints
from sqlalchemy import select

from service.auth import Principal, require
from service.cards.schemas import NulFree
from service.cards.service import list_cards_page, redemptions_t
from service.common import After, Limit, Name, Strict, page
from service.consumers import service
from service.context import AppContext, get_ctx
from service.errors import TooManyRequests, responses
from service.event_log.router import POLL_SECONDS, wait_for_events
from service.event_log.service import new_events
from service.idempotency import mutate
from service.redemptions.service import redemption_out

router = APIRouter(prefix="/v1/consumers", tags=["consumers"])


class ConsumerCreate(Strict):
    name: Annotated[Name, NulFree]
    phone: Annotated[str, StringConstraints(min_length=5, max_length=20)]


@router.post("", status_code=201, responses=responses(400, 409, 422, 429))
async def register_consumer(body: ConsumerCreate, request: Request, ctx: AppContext = Depends(get_ctx)):
    """Register as a consumer (anyone); the answer carries the `token` once. Rate-limited per address."""
    address = request.client.host if request.client else "unknown"
    limit = ctx.settings.registration_limit_per_minute

    async def count(tx):
        return await service.over_rate_limit(tx, address, limit)
    if await ctx.writer.run(count):
        raise TooManyRequests(f"Too many registrations from this address; the limit is {limit} a minute.", "rate_limited")

    async def op(tx):
        return 201, await service.register(tx, ctx.keys.phone, body.name, body.phone)
    return await mutate(ctx, request, None, body, op, caller=f"anon:{address}")


@router.get("/me", responses=responses(401, 403))
async def my_profile(ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("consumer"))):
    async with ctx.engines.reader.connect() as conn:
        return service.consumer_out(await service.load(conn, who.party_id))


@router.get("/me/cards", responses=responses(401, 403, 422))
async def my_cards(ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("consumer")),
                   limit: Limit = 50, after: After = None):
    return await list_cards_page(ctx, "consumer_id", who.party_id, limit, after)


@router.get("/me/redemptions", responses=responses(401, 403, 422))
async def my_redemptions(ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("consumer")),
                         status: Literal["pending", "confirmed", "rejected", "cancelled", "expired"] | None = None,
                         limit: Limit = 50, after: After = None,
                         wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for a new item")] = 0):
    """The confirmation inbox: `?status=pending` lists the asks waiting for this consumer's answer.
    With `wait` (long-poll), answers at once if there are items after `after`, else waits up to that
    many seconds for a new one (pass `after` = the id of the newest item held)."""
    t = redemptions_t
    stmt = select(t).where(t.c.consumer_id == who.party_id).order_by(t.c.id).limit(limit + 1)
    if status:
        stmt = stmt.where(t.c.status == status)
    if after:
        stmt = stmt.where(t.c.id > after)
    deadline = time.monotonic() + wait
    while True:
        waiter = new_events.event
        async with ctx.engines.reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        left = deadline - time.monotonic()
        if rows or left <= 0:
            break
        await wait_for_events(waiter, min(left, POLL_SECONDS))  # other replicas' asks: the table is read again
    return page([redemption_out(r) for r in rows], limit)
