from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from service.auth import Principal, require
from service.cards import service
from service.cards.schemas import CardPurchase, EmptyBody, RedemptionAsk
from service.context import AppContext, get_ctx
from service.errors import NotFound, Unprocessable, responses
from service.idempotency import mutate
from service.redemptions import service as redemptions

router = APIRouter(prefix="/v1/cards", tags=["cards"])


@router.post("", status_code=201, responses=responses(400, 401, 403, 404, 409, 422))
async def buy_card(
    body: CardPurchase,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("consumer")),
):
    """Buy a card: the whole price goes into escrow; the payment route is kept for refunds."""

    async def op(tx):
        return 201, await service.purchase(
            tx,
            who.party_id,
            body.product_id,
            body.payment.method,
            body.payment.reference,
            ctx.settings.cooling_off_days,
        )

    return await mutate(ctx, request, who, body, op)


@router.get("/{card_id}", responses=responses(401, 403, 404))
async def get_card(
    card_id: str,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("consumer", "merchant", "regulator", "auditor", "operator")),
):
    async with ctx.engines.reader.connect() as conn:
        card = (await conn.execute(select(service.cards_t).where(service.cards_t.c.id == card_id))).first()
    if (
        card is None
        or (who.role == "consumer" and card.consumer_id != who.party_id)
        or (who.role == "merchant" and card.merchant_id != who.party_id)
    ):
        raise NotFound("No such card.", "card_not_found")
    return service.card_out(card, ctx.clock.now())


@router.post("/{card_id}/redemptions", status_code=201, responses=responses(400, 401, 403, 404, 409, 422))
async def ask_redemption(
    card_id: str,
    body: RedemptionAsk,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("merchant")),
):
    """Ask the consumer to confirm a redemption (核销): places a hold until answered or expired."""
    given = [(name, getattr(body, name)) for name in ("amount", "uses", "periods") if getattr(body, name) is not None]
    if len(given) != 1:
        raise Unprocessable("Give exactly one of amount, uses or periods.", "invalid_redemption_units")
    unit_field, units = given[0]

    async def op(tx):
        return 201, await redemptions.ask(tx, who.party_id, card_id, unit_field, units, ctx.settings.hold_minutes)

    return await mutate(ctx, request, who, body, op)


@router.post("/{card_id}/refund", responses=responses(400, 401, 403, 404, 409))
async def refund(
    card_id: str,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("consumer")),
    body: EmptyBody | None = None,
):
    """Refund the card now by its purchase route; the rule (cooling-off, quit, expiry…) sets the amount."""

    async def op(tx):
        return 200, await service.consumer_refund(tx, who.party_id, card_id)

    return await mutate(ctx, request, who, body or {}, op)


@router.get("/{card_id}/refund-quote", responses=responses(401, 403, 404))
async def refund_quote(card_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("consumer"))):
    """What a refund of the card would pay back now and by which rule, changing nothing (shown before confirming)."""
    async with ctx.engines.reader.connect() as conn:
        card = (await conn.execute(select(service.cards_t).where(service.cards_t.c.id == card_id))).first()
        if card is None or card.consumer_id != who.party_id:
            raise NotFound("No such card.", "card_not_found")
        status = (
            await conn.execute(select(service.merchants_t.c.status).where(service.merchants_t.c.id == card.merchant_id))
        ).scalar_one()
    return service.refund_quote(card, status, ctx.clock.now())
