"""Two-phase redemption (核销): the merchant's ask holds escrow, the consumer's answer settles it.

A hold commits units (and the fen they would release) against the card so concurrent asks can
never over-commit it; confirm releases the principal share to the merchant, reject / cancel /
expiry void the hold. Each redemption changes state exactly once.
"""

from __future__ import annotations

from datetime import timedelta

from service.cards import repository as cards_repo
from service.cards import service as cards  # a module reference: cards/service.py imports this module too
from service.core.clock import iso, shown
from service.core.ids import new_id
from service.core.money import held_amount, release_share
from service.db.writer import Tx
from service.event_log.service import emit
from service.health import events
from service.http.errors import Conflict, NotFound, Unprocessable
from service.redemptions import repository as repo

UNIT_FIELD = {"stored_value": "amount", "count": "uses", "period": "periods"}


def append_card_entry(tx: Tx, kind: str, card, **fields) -> int:
    """Append a ledger entry about a card (hold, void, release, refund): its parties, then `fields`."""
    return tx.append(kind, card_id=card.id, merchant_id=card.merchant_id, consumer_id=card.consumer_id, **fields)


REDEMPTION_FIELDS = tuple(
    "id card_id merchant_id consumer_id status units hold_amount release_amount created_at expires_at answered_at"
    " ledger_seq".split()
)
REDEMPTION_TIMES = frozenset({"created_at", "expires_at", "answered_at"})


def redemption_out(r) -> dict:
    return shown(r, REDEMPTION_FIELDS, REDEMPTION_TIMES)


async def expire_card_holds(tx: Tx, card) -> object:
    """Void this card's holds whose time ran out, so they stop counting against the balance."""
    if card.units_held == 0:
        return card
    for r in repo.overdue_of_card(tx.conn.raw, card.id, tx.now):
        card = await void_hold(tx, card, r, "expired")
    return card


async def ask(tx: Tx, merchant_id: str, card_id: str, unit_field: str, units: int, hold_minutes: int) -> dict:
    raw = tx.conn.raw
    found = cards_repo.with_merchant_status(raw, card_id)
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
    seq = append_card_entry(
        tx,
        "hold",
        card,
        redemption_id=rid,
        units=units,
        amount=hold,
        held_delta=hold,
    )
    expires_at = now + timedelta(minutes=hold_minutes)
    cards_repo.set_held(raw, card.id, units_held, held)
    repo.insert_pending(raw, rid, card.id, merchant_id, card.consumer_id, units, hold, now, expires_at)
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
    found = repo.with_card(tx.conn.raw, redemption_id)
    if found is None or getattr(found[0], party_field) != party_id:
        raise NotFound("No such redemption.", "redemption_not_found")
    r = found[0]
    if r.status != "pending":
        raise Conflict(f"The redemption is already {r.status}.", "redemption_not_pending")
    if r.expires_at <= tx.now:
        raise Conflict("The redemption expired before it was answered.", "redemption_expired")
    return found


async def void_hold(tx: Tx, card, r, status: str, reason: str | None = None):
    """Void one pending hold: the one rule for a reject, a cancel, an expiry and the voids before a refund.

    `card` is the hold's card as it stands now (a row read in this write, or what the previous void
    returned) and `r` the redemption; the hold's units and the fen they would release stop counting
    against the card, the redemption becomes `status` (rejected, cancelled, expired) and the ledger
    says why (`reason`, the status unless a refund gives its rule). Returns the card as it now stands.
    A redemption that is not pending, or not this card's, is refused: it changes state once."""
    if r.status != "pending" or r.card_id != card.id:
        raise Conflict(f"The redemption is already {r.status}.", "redemption_not_pending")
    raw = tx.conn.raw
    units_held = card.units_held - r.units
    held = held_amount(card.price, card.units_total, card.units_used, units_held)
    seq = append_card_entry(
        tx,
        "void",
        card,
        redemption_id=r.id,
        units=r.units,
        amount=card.held - held,
        held_delta=held - card.held,
        reason=reason or status,
    )
    cards_repo.set_held(raw, card.id, units_held, held)
    repo.set_voided(raw, r.id, status, tx.now, seq)
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


async def void_pending_holds(tx: Tx, card, reason: str):
    """Void every pending hold of a card (before a refund, `reason` its rule), oldest first: each a
    `void_hold`, status cancelled. Returns the card as it now stands."""
    for r in repo.pending_of_card(tx.conn.raw, card.id):
        card = await void_hold(tx, card, r, "cancelled", reason)
    return card


async def confirm(tx: Tx, consumer_id: str, redemption_id: str) -> dict:
    raw = tx.conn.raw
    r, card = await _load_pending(tx, redemption_id, "consumer_id", consumer_id)
    units_used = card.units_used + r.units
    units_held = card.units_held - r.units
    release = release_share(card.price, card.units_total, card.units_used, r.units)
    held = held_amount(card.price, card.units_total, units_used, units_held)
    seq = append_card_entry(
        tx,
        "release",
        card,
        redemption_id=r.id,
        units=r.units,
        amount=release,
        held_delta=held - card.held,
        currency=card.currency,
    )
    status = "exhausted" if units_used == card.units_total else card.status
    escrow = card.escrow - release
    cards_repo.set_redeemed(raw, card.id, units_used, units_held, held, escrow, card.released + release, status)
    repo.set_confirmed(raw, r.id, release, tx.now, seq)
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
            cards.card_out(
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
    await void_hold(tx, card, r, status)
    return redemption_out(repo.get(tx.conn.raw, r.id))


async def expire_overdue(tx: Tx, limit: int = 500) -> int:
    """Sweeper: expire holds whose time ran out."""
    raw = tx.conn.raw
    rows = repo.overdue(raw, tx.now, limit)
    for rid, card_id in rows:
        await void_hold(tx, cards_repo.for_update(raw, card_id), repo.get(raw, rid), "expired")
    return len(rows)
