"""Cards: purchase into escrow, balances, and a consumer's refund (the causes: `service/cards/refunds.py`).

Runs inside the writer's transaction (`Tx`); adds and updates rows and appends ledger entries,
never commits. Balances live on the card row, where CHECK constraints guard them. Every statement
is in `service/cards/repository.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from service.cards import refunds  # a module reference: refunds imports the redemptions, which import this
from service.cards import repository as repo
from service.core.clock import iso
from service.core.ids import new_id
from service.db.writer import Tx
from service.event_log.service import emit
from service.health import events
from service.http.common import page
from service.http.errors import Conflict, NotFound


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
        "payment": refunds.payment_out(c),
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
    async with ctx.engines.reader.connect() as conn:
        rows = await repo.page_of_party(conn, party_column, party_id, limit, after)
    now = ctx.clock.now()
    return page([card_out(r, now) for r in rows], limit)


async def purchase(
    tx: Tx, consumer_id: str, product_id: str, method: str, reference: str, cooling_off_days: int
) -> dict:
    conn = tx.conn
    product = await repo.product(conn, product_id)
    if product is None:
        raise NotFound("No such product.", "product_not_found")
    if not product.on_sale:
        raise Conflict("This product is not on sale.", "product_not_on_sale")
    problem = merchant_selling_problem(await repo.merchant(conn, product.merchant_id))
    if problem:
        raise Conflict(problem, "merchant_not_selling")
    # A payment reference funds one card only (SPEC §12). Writes are serialised, so this check sees every
    # earlier purchase; the unique index uq_cards_payment is the backstop across replicas.
    if await repo.payment_used(conn, method, reference):
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
    await repo.insert_card(conn, **values)
    await events.card_purchased(tx, product.merchant_id, product.price)
    out = card_out(await repo.card(conn, card_id), now)
    out["ledger_seq"] = seq
    emit(tx, "card.purchased", out, merchant_id=product.merchant_id, consumer_id=consumer_id, ledger_seq=seq)
    return out


async def consumer_refund(tx: Tx, consumer_id: str, card_id: str) -> dict:
    """A consumer's refund of their card, by the cause that applies now (`refunds.refund_on_request`)."""
    card = repo.for_update(tx.conn.raw, card_id)
    if card is None or card.consumer_id != consumer_id:
        raise NotFound("No such card.", "card_not_found")
    return await refunds.refund_on_request(tx, card, await repo.merchant_status(tx.conn, card.merchant_id))


def refund_quote(card, merchant_status: str, now: datetime) -> dict:
    """What `consumer_refund` would pay back now, read-only: the same rule and arithmetic."""
    rule = refunds.refund_rule(card, merchant_status, now)
    amount = refunds.refund_amount(card, rule)
    return {
        "card_id": card.id,
        "amount": amount,
        "merchant_share": card.escrow - amount,
        "rule": rule,
        "currency": card.currency,
        "refundable": card.status != "refunded" and card.escrow > 0,
        "payment": refunds.payment_out(card),
    }
