"""HTTP for cards: buying one into escrow, reading it, asking a redemption of it, refunding it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.cards import repository, service
from service.cards.schemas import Card, CardPurchase, EmptyBody, PurchasedCard, RedemptionAsk, Refund, RefundQuote
from service.http.common import Ctx, answer, caller
from service.http.context import AppContext, get_ctx
from service.http.errors import NotFound, Unprocessable, responses
from service.redemptions import service as redemptions
from service.redemptions.router import ANY_PARTY, visible_or_404
from service.redemptions.schemas import AskedRedemption
from service.security.auth import Principal, require
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1/cards", tags=["cards"])
WRITE_ERRORS = responses(400, 401, 403, 404, 409, 422)


async def _card_or_404(conn, card_id: str, who: Principal):
    return visible_or_404(await repository.card(conn, card_id), who, NotFound("No such card.", "card_not_found"))


@router.post("", status_code=201, response_model=PurchasedCard, responses=WRITE_ERRORS)
async def buy_card(body: CardPurchase, request: Request, ctx: Ctx, who: caller("consumer")):
    """Buy a card: the whole price goes into escrow; the payment route is kept for refunds."""
    paid, cooling_off_days = body.payment, ctx.settings.cooling_off_days
    rule = answer(201, service.purchase, who.party_id, body.product_id, paid.method, paid.reference, cooling_off_days)
    return await mutate(ctx, request, who, body, rule)


@router.get("/{card_id}", response_model=Card, responses=responses(401, 403, 404))
async def get_card(card_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(ANY_PARTY)):
    async with ctx.engines.reader.connect() as conn:
        card = await _card_or_404(conn, card_id, who)
    return service.card_out(card, ctx.clock.now())


@router.post("/{card_id}/redemptions", status_code=201, response_model=AskedRedemption, responses=WRITE_ERRORS)
async def ask_redemption(card_id: str, body: RedemptionAsk, request: Request, ctx: Ctx, who: caller("merchant")):
    """Ask the consumer to confirm a redemption (核销): places a hold until answered or expired."""
    given = [(name, getattr(body, name)) for name in ("amount", "uses", "periods") if getattr(body, name) is not None]
    if len(given) != 1:
        raise Unprocessable("Give exactly one of amount, uses or periods.", "invalid_redemption_units")
    (unit_field, units), hold_minutes = given[0], ctx.settings.hold_minutes
    rule = answer(201, redemptions.ask, who.party_id, card_id, unit_field, units, hold_minutes)
    return await mutate(ctx, request, who, body, rule)


@router.post("/{card_id}/refund", response_model=Refund, responses=responses(400, 401, 403, 404, 409))
async def refund(card_id: str, request: Request, ctx: Ctx, who: caller("consumer"), body: EmptyBody | None = None):
    """Refund the card now by its purchase route; the rule (cooling-off, quit, expiry…) sets the amount."""
    return await mutate(ctx, request, who, body or {}, answer(200, service.consumer_refund, who.party_id, card_id))


@router.get("/{card_id}/refund-quote", response_model=RefundQuote, responses=responses(401, 403, 404))
async def get_refund_quote(
    card_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("consumer"))
):
    """What a refund of the card would pay back now and by which rule, changing nothing (shown before confirming)."""
    async with ctx.engines.reader.connect() as conn:
        card = await _card_or_404(conn, card_id, who)
        status = await repository.merchant_status(conn, card.merchant_id)
    return service.refund_quote(card, status, ctx.clock.now())
