"""HTTP for merchants: onboarding, their own profile, cards and figures, closure, default and the lists."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.cards.service import list_cards_page
from service.http.common import After, Ctx, Limit, answer, caller, read
from service.http.errors import responses
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
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1/merchants", tags=["merchants"])
Supervisor = caller("regulator", "operator")
ERRORS = responses(400, 401, 403, 404, 409, 422)


@router.post("", status_code=201, response_model=OnboardedMerchant, responses=responses(400, 401, 403, 409, 422))
async def onboard_merchant(body: MerchantCreate, request: Request, ctx: Ctx, who: caller("operator")):
    """Onboard a merchant with its unified social credit code; the answer carries its `api_key` once."""
    return await mutate(ctx, request, who, body, answer(201, service.onboard, body.name, body.uscc, body.category))


@router.get("/me", response_model=Merchant, responses=responses(401, 403))
async def my_merchant_profile(ctx: Ctx, who: caller("merchant")):
    return service.merchant_out(await read(ctx, service.load, who.party_id))


@router.get("/me/cards", response_model=CardPage, responses=responses(401, 403, 422))
async def my_merchant_cards(ctx: Ctx, who: caller("merchant"), limit: Limit = 50, after: After = None):
    return await list_cards_page(ctx, "merchant_id", who.party_id, limit, after)


@router.get("/me/stats", response_model=MerchantStats, responses=responses(401, 403))
async def my_stats(ctx: Ctx, who: caller("merchant")):
    return await read(ctx, service.stats, who.party_id)


@router.post("/me/closure", response_model=Merchant, responses=responses(400, 401, 403, 409, 422))
async def announce_closure(body: ClosureRequest, request: Request, ctx: Ctx, who: caller("merchant")):
    """Announce closure at least 30 days ahead: no new sales; at the date every card is refunded."""
    notice = ctx.settings.closure_notice_days
    op = answer(200, service.announce_closure, who.party_id, body.effective_date, body.reason, notice)
    return await mutate(ctx, request, who, body, op)


@router.post("/{merchant_id}/default", response_model=DefaultedMerchant, responses=ERRORS)
async def declare_default(merchant_id: str, body: ReasonRequest, request: Request, ctx: Ctx, who: Supervisor):
    """Declare a merchant defaulted: every card refunded at once, every pending hold voided."""
    op = answer(200, service.declare_default, merchant_id, body.reason, who.party_id)
    return await mutate(ctx, request, who, body, op)


@router.post("/{merchant_id}/abnormal-list", response_model=Merchant, responses=ERRORS)
async def abnormal_list(merchant_id: str, body: ListFlagRequest, request: Request, ctx: Ctx, who: Supervisor):
    """Put a merchant on (or take it off) the abnormal-operation list (经营异常名录): no new sales."""
    op = answer(200, service.set_flag, merchant_id, "abnormal", body.listed, who.party_id)
    return await mutate(ctx, request, who, body, op)


@router.post("/{merchant_id}/delisting", response_model=Merchant, responses=ERRORS)
async def delisting(merchant_id: str, body: ListFlagRequest, request: Request, ctx: Ctx, who: Supervisor):
    """Impose (`listed: true`) or lift a delisting (下架)."""
    op = answer(200, service.set_flag, merchant_id, "delisted", body.listed, who.party_id)
    return await mutate(ctx, request, who, body, op)
