"""Two-phase redemption (核销): the merchant's ask holds escrow, the consumer's answer settles it.

A hold commits units (and the fen they would release) against the card so concurrent asks can
never over-commit it; confirm releases the principal share to the merchant, reject / cancel /
expiry void the hold. Each redemption changes state exactly once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from service import events
from service.cards.service import card_out, load_card_for_update, redemptions_t
from service.clock import iso
from service.db.writer import Tx
from service.errors import Conflict, NotFound, Unprocessable
from service.event_log.service import emit
from service.ids import new_id
from service.money import held_amount, release_share

UNIT_FIELD = {"stored_value": "amount", "count": "uses", "period": "periods"}


def redemption_out(r) -> dict:
    return {
        "id": r.id,
        "card_id": r.card_id,
        "merchant_id": r.merchant_id,
        "consumer_id": r.consumer_id,
        "status": r.status,
        "units": r.units,
        "hold_amount": r.hold_amount,
        "release_amount": r.release_amount,
        "created_at": iso(r.created_at),
        "expires_at": iso(r.expires_at),
        "answered_at": iso(r.answered_at),
        "ledger_seq": r.ledger_seq,
    }


async def expire_card_holds(tx: Tx, card) -> object:
    """Void this card's holds whose time ran out, so they stop counting against the balance."""
    if card.units_held == 0:
        return card
    raw = tx.conn.raw
    overdue = raw.all(
        "SELECT id FROM redemptions WHERE card_id = ? AND status = 'pending' AND expires_at <= ?",
        (card.id, raw.t(tx.now)),
    )
    for (rid,) in overdue:
        card = await _void(tx, card, rid, "expired")
    return card


async def ask(tx: Tx, merchant_id: str, card_id: str, unit_field: str, units: int, hold_minutes: int) -> dict:
    raw = tx.conn.raw
    found = raw.card_and_merchant_status(card_id)
    if found is None or found[0].merchant_id != merchant_id:
        raise NotFound("No such card.", "card_not_found")
    card, merchant_status = found
    expected = UNIT_FIELD[card.type]
    if unit_field != expected:
        raise Unprocessable(f"A {card.type} card is redeemed by '{expected}', not '{unit_field}'.", "wrong_unit")
    if merchant_status in ("defaulted", "closed"):
        raise Conflict("The merchant can no longer redeem cards.", "merchant_not_operating")
    if card.status != "active":
        raise Conflict(f"The card is {card.status}.", "card_not_active")
    now = tx.now
    if card.expires_at <= now:
        raise Conflict("The card has expired.", "card_expired")
    card = await expire_card_holds(tx, card)
    limit = card.units_total
    if card.type == "period":
        elapsed = int((now - card.purchased_at) // timedelta(days=card.period_days))
        limit = min(limit, elapsed)
    committed = card.units_used + card.units_held
    if committed + units > limit:
        if card.type == "period" and committed + units <= card.units_total:
            raise Conflict("Only periods that have ended can be redeemed.", "period_not_ended")
        raise Conflict(
            f"The card has {card.units_total - committed} {expected} available, fewer than {units}.",
            "insufficient_balance",
        )
    units_held = card.units_held + units
    held = held_amount(card.price, card.units_total, card.units_used, units_held)
    hold = held - card.held
    rid = new_id("rdm")
    seq = tx.append(
        "hold",
        card_id=card.id,
        merchant_id=merchant_id,
        consumer_id=card.consumer_id,
        redemption_id=rid,
        units=units,
        amount=hold,
        held_delta=hold,
    )
    expires_at = now + timedelta(minutes=hold_minutes)
    raw.run("UPDATE cards SET units_held = ?, held = ? WHERE id = ?", (units_held, held, card.id))
    raw.run(
        "INSERT INTO redemptions (id, card_id, merchant_id, consumer_id, status, units, hold_amount, "
        "release_amount, created_at, expires_at, answered_at, ledger_seq) "
        "VALUES (?, ?, ?, ?, 'pending', ?, ?, NULL, ?, ?, NULL, NULL)",
        (rid, card.id, merchant_id, card.consumer_id, units, hold, raw.t(now), raw.t(expires_at)),
    )
    await events.redemption_asked(tx, merchant_id)
    out = {
        "id": rid,
        "card_id": card.id,
        "merchant_id": merchant_id,
        "consumer_id": card.consumer_id,
        "status": "pending",
        "units": units,
        "hold_amount": hold,
        "release_amount": None,
        "created_at": iso(now),
        "expires_at": iso(expires_at),
        "answered_at": None,
        "ledger_seq": None,
        "hold_ledger_seq": seq,
    }
    emit(tx, "redemption.requested", out, merchant_id=merchant_id, consumer_id=card.consumer_id, ledger_seq=seq)
    return out


async def _load_pending(tx: Tx, redemption_id: str, party_field: str, party_id: str):
    """(redemption, its card) if the redemption is the party's and still pending."""
    found = tx.conn.raw.redemption_and_card(redemption_id)
    if found is None or getattr(found[0], party_field) != party_id:
        raise NotFound("No such redemption.", "redemption_not_found")
    r = found[0]
    if r.status != "pending":
        raise Conflict(f"The redemption is already {r.status}.", "redemption_not_pending")
    if r.expires_at <= tx.now:
        raise Conflict("The redemption expired before it was answered.", "redemption_expired")
    return found


async def _void(tx: Tx, card, redemption_id: str, status: str):
    raw = tx.conn.raw
    r = raw.redemption(redemption_id)
    units_held = card.units_held - r.units
    held = held_amount(card.price, card.units_total, card.units_used, units_held)
    seq = tx.append(
        "void",
        card_id=card.id,
        merchant_id=card.merchant_id,
        consumer_id=card.consumer_id,
        redemption_id=r.id,
        units=r.units,
        amount=card.held - held,
        held_delta=held - card.held,
        reason=status,
    )
    raw.run("UPDATE cards SET units_held = ?, held = ? WHERE id = ?", (units_held, held, card.id))
    raw.run(
        "UPDATE redemptions SET status = ?, answered_at = ?, ledger_seq = ? WHERE id = ?",
        (status, raw.t(tx.now), seq, r.id),
    )
    await events.redemption_answered(tx, card.merchant_id, status, 0, card.consumer_id)
    emit(
        tx,
        f"redemption.{status}",
        redemption_out(r._replace(status=status, answered_at=tx.now, ledger_seq=seq)),
        merchant_id=card.merchant_id,
        consumer_id=card.consumer_id,
        ledger_seq=seq,
    )
    return card._replace(units_held=units_held, held=held)


async def confirm(tx: Tx, consumer_id: str, redemption_id: str) -> dict:
    raw = tx.conn.raw
    r, card = await _load_pending(tx, redemption_id, "consumer_id", consumer_id)
    units_used = card.units_used + r.units
    units_held = card.units_held - r.units
    release = release_share(card.price, card.units_total, card.units_used, r.units)
    held = held_amount(card.price, card.units_total, units_used, units_held)
    seq = tx.append(
        "release",
        card_id=card.id,
        merchant_id=card.merchant_id,
        consumer_id=card.consumer_id,
        redemption_id=r.id,
        units=r.units,
        amount=release,
        held_delta=held - card.held,
        currency=card.currency,
    )
    status = "exhausted" if units_used == card.units_total else card.status
    escrow = card.escrow - release
    raw.run(
        "UPDATE cards SET units_used = ?, units_held = ?, held = ?, escrow = ?, released = ?, status = ? WHERE id = ?",
        (units_used, units_held, held, escrow, card.released + release, status, card.id),
    )
    raw.run(
        "UPDATE redemptions SET status = 'confirmed', release_amount = ?, answered_at = ?, ledger_seq = ? WHERE id = ?",
        (release, raw.t(tx.now), seq, r.id),
    )
    await events.redemption_answered(tx, card.merchant_id, "confirmed", release)
    out = redemption_out(r)
    out.update(status="confirmed", release_amount=release, answered_at=iso(tx.now), ledger_seq=seq)
    out["card_balance"] = {
        "escrow": escrow,
        "held": held,
        "available": escrow - held,
        "units_used": units_used,
        "units_left": card.units_total - units_used,
    }
    emit(tx, "redemption.confirmed", out, merchant_id=card.merchant_id, consumer_id=card.consumer_id, ledger_seq=seq)
    if status == "exhausted":
        emit(
            tx,
            "card.exhausted",
            card_out(
                card._replace(
                    units_used=units_used,
                    units_held=units_held,
                    held=held,
                    escrow=escrow,
                    released=card.released + release,
                    status=status,
                ),
                tx.now,
            ),
            merchant_id=card.merchant_id,
            consumer_id=card.consumer_id,
            ledger_seq=seq,
        )
    return out


async def settle_without_release(tx: Tx, redemption_id: str, party_field: str, party_id: str, status: str) -> dict:
    """Reject (consumer) or cancel (merchant): the hold is voided and nothing moves."""
    r, card = await _load_pending(tx, redemption_id, party_field, party_id)
    await _void(tx, card, r.id, status)
    return redemption_out(tx.conn.raw.redemption(r.id))


async def expire_overdue(tx: Tx, limit: int = 500) -> int:
    """Sweeper: expire holds whose time ran out."""
    rows = (
        await tx.conn.execute(
            select(redemptions_t.c.id, redemptions_t.c.card_id)
            .where(redemptions_t.c.status == "pending", redemptions_t.c.expires_at <= tx.now)
            .order_by(redemptions_t.c.expires_at)
            .limit(limit)
        )
    ).all()
    for r in rows:
        card = await load_card_for_update(tx.conn, r.card_id)
        await _void(tx, card, r.id, "expired")
    return len(rows)
