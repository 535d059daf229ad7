"""Cards: purchase into escrow, balances, and every refund cause (原路退还).

Runs inside the writer's transaction (`Tx`); adds and updates rows and appends ledger entries,
never commits. Balances live on the card row, where CHECK constraints guard them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from service import events
from service.clock import iso
from service.common import page
from service.db.models import Card, Merchant, Product, Redemption
from service.db.writer import Tx
from service.errors import Conflict, NotFound
from service.event_log.service import emit
from service.ids import new_id
from service.money import consumer_quit_refund
from service.redemptions import service as redemptions  # a module reference: it imports this module too

cards_t = Card.__table__
products_t = Product.__table__
merchants_t = Merchant.__table__
redemptions_t = Redemption.__table__

REFUND_RULES = ("cooling_off", "consumer_quit", "expiry", "merchant_closure", "merchant_default")


def merchant_selling_problem(m) -> str | None:
    if m.status == "defaulted":
        return "The merchant has defaulted."
    if m.status in ("closing", "closed"):
        return "The merchant has announced closure and sells no new cards."
    if m.abnormal:
        return "The merchant is on the abnormal-operation list (经营异常名录)."
    if m.delisted:
        return "The merchant is delisted (下架)."
    return None


def card_out(c, now: datetime | None = None) -> dict:
    units_left = c.units_total - c.units_used
    return {
        "id": c.id,
        "product_id": c.product_id,
        "merchant_id": c.merchant_id,
        "consumer_id": c.consumer_id,
        "type": c.type,
        "status": c.status,
        "price": c.price,
        "currency": c.currency,
        "purchased_at": iso(c.purchased_at),
        "expires_at": iso(c.expires_at),
        "cooling_off_ends_at": iso(c.cooling_off_ends_at),
        "payment": {"method": c.payment_method, "reference": c.payment_reference},
        "list_price": c.list_price,
        "refund_rule": c.refund_rule,
        "ended_at": iso(c.ended_at),
        "balance": {
            "escrow": c.escrow,
            "held": c.held,
            "available": c.escrow - c.held,
            "released": c.released,
            "refunded": c.refunded,
            "units_total": c.units_total,
            "units_used": c.units_used,
            "units_held": c.units_held,
            "units_left": units_left,
            "units_available": units_left - c.units_held,
        },
        "expired": now is not None and c.status == "active" and c.expires_at <= now,
    }


async def list_cards_page(ctx, party_column: str, party_id: str, limit: int, after: str | None) -> dict:
    """A party's cards, one cursor page: `party_column` is consumer_id or merchant_id."""
    stmt = select(cards_t).where(cards_t.c[party_column] == party_id).order_by(cards_t.c.id).limit(limit + 1)
    if after:
        stmt = stmt.where(cards_t.c.id > after)
    async with ctx.engines.reader.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    now = ctx.clock.now()
    return page([card_out(r, now) for r in rows], limit)


async def purchase(
    tx: Tx, consumer_id: str, product_id: str, method: str, reference: str, cooling_off_days: int
) -> dict:
    conn = tx.conn
    product = (await conn.execute(select(products_t).where(products_t.c.id == product_id))).first()
    if product is None:
        raise NotFound("No such product.", "product_not_found")
    if not product.on_sale:
        raise Conflict("This product is not on sale.", "product_not_on_sale")
    merchant = (await conn.execute(select(merchants_t).where(merchants_t.c.id == product.merchant_id))).first()
    problem = merchant_selling_problem(merchant)
    if problem:
        raise Conflict(problem, "merchant_not_selling")
    # A payment reference funds one card only (SPEC §12). Writes are serialised, so this check sees every
    # earlier purchase; the unique index uq_cards_payment is the backstop across replicas.
    used = (
        await conn.execute(
            select(cards_t.c.id)
            .where(cards_t.c.payment_method == method, cards_t.c.payment_reference == reference)
            .limit(1)
        )
    ).first()
    if used is not None:
        raise Conflict(
            "This payment reference has already funded a card; a payment funds one card only.", "payment_reference_used"
        )
    now = tx.now
    card_id = new_id("card")
    seq = tx.append(
        "purchase",
        card_id=card_id,
        merchant_id=product.merchant_id,
        consumer_id=consumer_id,
        product_id=product.id,
        amount=product.price,
        currency=product.currency,
        payment_method=method,
        held_delta=0,
    )
    values = dict(
        id=card_id,
        product_id=product.id,
        merchant_id=product.merchant_id,
        consumer_id=consumer_id,
        type=product.type,
        status="active",
        price=product.price,
        currency=product.currency,
        list_price=product.list_price,
        units_total=product.units_total,
        units_used=0,
        units_held=0,
        period_days=product.period_days,
        escrow=product.price,
        held=0,
        released=0,
        refunded=0,
        payment_method=method,
        payment_reference=reference,
        purchased_at=now,
        expires_at=now + timedelta(days=product.valid_days),
        cooling_off_ends_at=now + timedelta(days=cooling_off_days),
        purchase_seq=seq,
    )
    await conn.execute(insert(cards_t).values(**values))
    await events.card_purchased(tx, product.merchant_id, product.price)
    card = (await conn.execute(select(cards_t).where(cards_t.c.id == card_id))).first()
    out = card_out(card, now)
    out["ledger_seq"] = seq
    emit(tx, "card.purchased", out, merchant_id=product.merchant_id, consumer_id=consumer_id, ledger_seq=seq)
    return out


async def load_card_for_update(conn, card_id: str):
    """The card row inside a write (writes are serialised by the writer's lock on the ledger head)."""
    return conn.raw.card(card_id)


async def refund_card(tx: Tx, card, rule: str) -> dict:
    """End a card and send its money back by the purchase route. `card` is a fresh row."""
    if card.status == "refunded":
        raise Conflict("This card has already been refunded.", "card_already_refunded")
    await redemptions.void_pending_holds(tx, card, reason=rule)
    escrow = card.escrow
    if rule == "consumer_quit":
        amount = consumer_quit_refund(card.price, escrow, card.units_used, card.list_price)
    else:  # cooling_off (escrow is the full price then), expiry, closure, default: all that is left
        amount = escrow
    merchant_share = escrow - amount
    seq = tx.append(
        "refund",
        card_id=card.id,
        merchant_id=card.merchant_id,
        consumer_id=card.consumer_id,
        amount=amount,
        merchant_share=merchant_share,
        rule=rule,
        currency=card.currency,
        payment_method=card.payment_method,
        held_delta=0,
    )
    await tx.conn.execute(
        update(cards_t)
        .where(cards_t.c.id == card.id)
        .values(
            status="refunded",
            escrow=0,
            held=0,
            units_held=0,
            refunded=card.refunded + amount,
            released=card.released + merchant_share,
            refund_rule=rule,
            ended_at=tx.now,
        )
    )
    await events.card_refunded(tx, card.merchant_id, amount, merchant_share, card.consumer_id)
    out = {
        "card_id": card.id,
        "amount": amount,
        "merchant_share": merchant_share,
        "rule": rule,
        "currency": card.currency,
        "payment": {"method": card.payment_method, "reference": card.payment_reference},
        "ledger_seq": seq,
    }
    emit(
        tx,
        "card.refunded",
        {**out, "merchant_id": card.merchant_id, "consumer_id": card.consumer_id},
        merchant_id=card.merchant_id,
        consumer_id=card.consumer_id,
        ledger_seq=seq,
    )
    return out


async def consumer_refund(tx: Tx, consumer_id: str, card_id: str) -> dict:
    card = await load_card_for_update(tx.conn, card_id)
    if card is None or card.consumer_id != consumer_id:
        raise NotFound("No such card.", "card_not_found")
    if card.status == "refunded":
        raise Conflict("This card has already been refunded.", "card_already_refunded")
    if card.escrow == 0:
        raise Conflict("Nothing is left in escrow on this card.", "nothing_to_refund")
    merchant = (await tx.conn.execute(select(merchants_t.c.status).where(merchants_t.c.id == card.merchant_id))).first()
    return await refund_card(tx, card, refund_rule(card, merchant.status, tx.now))


def refund_rule(card, merchant_status: str, now: datetime) -> str:
    """Which refund rule applies to a consumer's refund of this card now (SPEC §2)."""
    if merchant_status in ("defaulted", "closed"):
        return "merchant_default" if merchant_status == "defaulted" else "merchant_closure"
    if card.expires_at <= now:
        return "expiry"
    if merchant_status == "closing":
        return "merchant_closure"  # the merchant cannot serve the card to its end: all that is left
    if now < card.cooling_off_ends_at and card.units_used == 0 and card.released == 0:
        return "cooling_off"
    return "consumer_quit"


def refund_quote(card, merchant_status: str, now: datetime) -> dict:
    """What `consumer_refund` would pay back now, read-only: the same rule and arithmetic as `refund_card`."""
    rule = refund_rule(card, merchant_status, now)
    amount = (
        consumer_quit_refund(card.price, card.escrow, card.units_used, card.list_price)
        if rule == "consumer_quit"
        else card.escrow
    )
    return {
        "card_id": card.id,
        "amount": amount,
        "merchant_share": card.escrow - amount,
        "rule": rule,
        "currency": card.currency,
        "refundable": card.status != "refunded" and card.escrow > 0,
        "payment": {"method": card.payment_method, "reference": card.payment_reference},
    }


async def refund_merchant_cards(tx: Tx, merchant_id: str, rule: str, limit: int | None = None) -> int:
    """Refund every live card of a merchant (default, closure). Returns how many."""
    stmt = (
        select(cards_t.c.id)
        .where(cards_t.c.merchant_id == merchant_id, cards_t.c.status == "active")
        .order_by(cards_t.c.id)
    )
    if limit:
        stmt = stmt.limit(limit)
    ids = [r.id for r in (await tx.conn.execute(stmt)).all()]
    for card_id in ids:
        await refund_card(tx, await load_card_for_update(tx.conn, card_id), rule)
    return len(ids)
