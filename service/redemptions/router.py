from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from service.auth import Principal, require
from service.cards.schemas import EmptyBody
from service.cards.service import redemptions_t
from service.context import AppContext, get_ctx
from service.errors import NotFound, responses
from service.idempotency import mutate
from service.redemptions import service

router = APIRouter(prefix="/v1/redemptions", tags=["redemptions"])


@router.get("/{redemption_id}", responses=responses(401, 403, 404))
async def get_redemption(
    redemption_id: str,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("consumer", "merchant", "regulator", "auditor", "operator")),
):
    async with ctx.engines.reader.connect() as conn:
        r = (await conn.execute(select(redemptions_t).where(redemptions_t.c.id == redemption_id))).first()
    if (
        r is None
        or (who.role == "consumer" and r.consumer_id != who.party_id)
        or (who.role == "merchant" and r.merchant_id != who.party_id)
    ):
        raise NotFound("No such redemption.", "redemption_not_found")
    return service.redemption_out(r)


@router.post("/{redemption_id}/confirm", responses=responses(400, 401, 403, 404, 409))
async def confirm(
    redemption_id: str,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("consumer")),
    body: EmptyBody | None = None,
):
    """Confirm: the principal share moves to the merchant; the answer's `ledger_seq` is the receipt."""

    async def op(tx):
        return 200, await service.confirm(tx, who.party_id, redemption_id)

    return await mutate(ctx, request, who, body or {}, op)


@router.post("/{redemption_id}/reject", responses=responses(400, 401, 403, 404, 409))
async def reject(
    redemption_id: str,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("consumer")),
    body: EmptyBody | None = None,
):
    """Reject: the hold is voided and the money stays in escrow."""

    async def op(tx):
        return 200, await service.settle_without_release(tx, redemption_id, "consumer_id", who.party_id, "rejected")

    return await mutate(ctx, request, who, body or {}, op)


@router.post("/{redemption_id}/cancel", responses=responses(400, 401, 403, 404, 409))
async def cancel(
    redemption_id: str,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("merchant")),
    body: EmptyBody | None = None,
):
    """The merchant withdraws a pending ask."""

    async def op(tx):
        return 200, await service.settle_without_release(tx, redemption_id, "merchant_id", who.party_id, "cancelled")

    return await mutate(ctx, request, who, body or {}, op)
