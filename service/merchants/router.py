from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.auth import Principal, require
from service.cards.service import list_cards_page
from service.common import After, Limit
from service.context import AppContext, get_ctx
from service.errors import responses
from service.idempotency import mutate
from service.merchants import service
from service.merchants.schemas import (
    CardPage,
    ClosureRequest,
    DefaultedMerchant,
    ListFlagRequest,
    Merchant,
    MerchantCreate,
    MerchantStats,
    OnboardedMerchant,
    ReasonRequest,
)

router = APIRouter(prefix="/v1/merchants", tags=["merchants"])


@router.post("", status_code=201, response_model=OnboardedMerchant, responses=responses(400, 401, 403, 409, 422))
async def onboard_merchant(
    body: MerchantCreate,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("operator")),
):
    """Onboard a merchant with its unified social credit code; the answer carries its `api_key` once."""

    async def op(tx):
        return 201, await service.onboard(tx, body.name, body.uscc, body.category)

    return await mutate(ctx, request, who, body, op)


@router.get("/me", response_model=Merchant, responses=responses(401, 403))
async def my_merchant_profile(ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("merchant"))):
    async with ctx.engines.reader.connect() as conn:
        return service.merchant_out(await service.load(conn, who.party_id))


@router.get("/me/cards", response_model=CardPage, responses=responses(401, 403, 422))
async def my_merchant_cards(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("merchant")),
    limit: Limit = 50,
    after: After = None,
):
    return await list_cards_page(ctx, "merchant_id", who.party_id, limit, after)


@router.get("/me/stats", response_model=MerchantStats, responses=responses(401, 403))
async def my_stats(ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("merchant"))):
    async with ctx.engines.reader.connect() as conn:
        return await service.stats(conn, who.party_id)


@router.post("/me/closure", response_model=Merchant, responses=responses(400, 401, 403, 409, 422))
async def announce_closure(
    body: ClosureRequest,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("merchant")),
):
    """Announce closure at least 30 days ahead: no new sales; at the date every card is refunded."""

    async def op(tx):
        return 200, await service.announce_closure(
            tx, who.party_id, body.effective_date, body.reason, ctx.settings.closure_notice_days
        )

    return await mutate(ctx, request, who, body, op)


@router.post(
    "/{merchant_id}/default", response_model=DefaultedMerchant, responses=responses(400, 401, 403, 404, 409, 422)
)
async def declare_default(
    merchant_id: str,
    body: ReasonRequest,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("regulator", "operator")),
):
    """Declare a merchant defaulted: every card refunded at once, every pending hold voided."""

    async def op(tx):
        return 200, await service.declare_default(tx, merchant_id, body.reason, who.party_id)

    return await mutate(ctx, request, who, body, op)


@router.post("/{merchant_id}/abnormal-list", response_model=Merchant, responses=responses(400, 401, 403, 404, 409, 422))
async def abnormal_list(
    merchant_id: str,
    body: ListFlagRequest,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("regulator", "operator")),
):
    """Put a merchant on (or take it off) the abnormal-operation list (经营异常名录): no new sales."""

    async def op(tx):
        return 200, await service.set_flag(tx, merchant_id, "abnormal", body.listed, who.party_id)

    return await mutate(ctx, request, who, body, op)


@router.post("/{merchant_id}/delisting", response_model=Merchant, responses=responses(400, 401, 403, 404, 409, 422))
async def delisting(
    merchant_id: str,
    body: ListFlagRequest,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("regulator", "operator")),
):
    """Impose (`listed: true`) or lift a delisting (下架)."""

    async def op(tx):
        return 200, await service.set_flag(tx, merchant_id, "delisted", body.listed, who.party_id)

    return await mutate(ctx, request, who, body, op)
