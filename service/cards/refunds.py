"""Why a card is refunded (原路退还): one named function per cause, all ending in `_refund`.

| Cause | Who starts it | Amount |
|---|---|---|
| `refund_in_cooling_off` | the consumer, before the cooling-off period ends, nothing used | the whole price |
| `refund_on_quit` | the consumer, after cooling-off | price less use at list price (`money`) |
| `refund_for_expiry` | the sweeper, or the consumer, once the card's validity ended | all that is left |
| `refund_for_closure` | the sweeper at the closure date, or the consumer of a closing merchant | all that is left |
| `refund_for_merchant_default` | a regulator's or the operator's default, or the consumer after it | all that is left |

`refund_on_request` picks the cause of a consumer's refund (`refund_rule`); the sweeper and the
merchant lifecycle call theirs by name. Every refund voids the card's pending holds first
(`redemptions.service.void_pending_holds`, one `void_hold` each) and goes back by the purchase's route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from service.cards import repository as repo
from service.core.money import consumer_quit_refund
from service.db.writer import Tx
from service.event_log.service import emit
from service.health import events
from service.http.errors import Conflict
from service.redemptions import service as redemptions  # a module reference: it imports the cards' modules


def refund_rule(card, merchant_status: str, now: datetime) -> str:
    """Which cause applies to a consumer's refund of this card now (SPEC §2)."""
    if merchant_status in ("defaulted", "closed"):
        return "merchant_default" if merchant_status == "defaulted" else "merchant_closure"
    if card.expires_at <= now:
        return "expiry"
    if merchant_status == "closing":
        return "merchant_closure"  # the merchant cannot serve the card to its end: all that is left
    if now < card.cooling_off_ends_at and card.units_used == 0 and card.released == 0:
        return "cooling_off"
    return "consumer_quit"


def refund_amount(card, rule: str) -> int:
    """What a refund under `rule` pays back: after cooling-off what was used counts at list price;
    under every other rule all that is left in escrow (in cooling-off that is the whole price)."""
    if rule == "consumer_quit":
        return consumer_quit_refund(card.price, card.escrow, card.units_used, card.list_price)
    return card.escrow


def payment_out(card) -> dict:
    return {"method": card.payment_method, "reference": card.payment_reference}


async def refund_in_cooling_off(tx: Tx, card) -> dict:
    """The consumer changed their mind within the cooling-off period, nothing used: the whole price back."""
    return await _refund(tx, card, "cooling_off")


async def refund_on_quit(tx: Tx, card) -> dict:
    """The consumer quits after cooling-off: the price less what was used at list price
    (SPC 法释〔2025〕4号 Art. 19), the rest to the merchant."""
    return await _refund(tx, card, "consumer_quit")


async def refund_for_expiry(tx: Tx, card) -> dict:
    """The card's validity ended with value left: all of it back to the consumer."""
    return await _refund(tx, card, "expiry")


async def refund_for_closure(tx: Tx, card) -> dict:
    """The merchant closes (announced, with notice): all that is left back to the consumer."""
    return await _refund(tx, card, "merchant_closure")


async def refund_for_merchant_default(tx: Tx, card) -> dict:
    """The merchant defaulted (跑路): all that is left back to the consumer."""
    return await _refund(tx, card, "merchant_default")


CAUSES: dict[str, Callable[[Tx, object], Awaitable[dict]]] = {
    "cooling_off": refund_in_cooling_off,
    "consumer_quit": refund_on_quit,
    "expiry": refund_for_expiry,
    "merchant_closure": refund_for_closure,
    "merchant_default": refund_for_merchant_default,
}


async def refund_on_request(tx: Tx, card, merchant_status: str) -> dict:
    """A consumer's refund of their card (the caller checked it is theirs): the cause `refund_rule` names."""
    if card.status == "refunded":
        raise Conflict("This card has already been refunded.", "card_already_refunded")
    if card.escrow == 0:
        raise Conflict("Nothing is left in escrow on this card.", "nothing_to_refund")
    return await CAUSES[refund_rule(card, merchant_status, tx.now)](tx, card)


async def refund_expired(tx: Tx, limit: int = 200) -> int:
    """Sweeper: refund cards whose validity ended, soonest first. Returns how many."""
    ids = await repo.expired_ids(tx.conn, tx.now, limit)
    for card_id in ids:
        await refund_for_expiry(tx, repo.for_update(tx.conn.raw, card_id))
    return len(ids)


async def refund_all_for_merchant_default(tx: Tx, merchant_id: str) -> int:
    """Every live card of a defaulted merchant. Returns how many."""
    return await _refund_merchant_cards(tx, merchant_id, refund_for_merchant_default)


async def refund_all_for_closure(tx: Tx, merchant_id: str) -> int:
    """Every live card of a merchant whose closure date has come. Returns how many."""
    return await _refund_merchant_cards(tx, merchant_id, refund_for_closure)


async def _refund_merchant_cards(tx: Tx, merchant_id: str, cause) -> int:
    ids = await repo.live_ids_of_merchant(tx.conn, merchant_id)
    for card_id in ids:
        await cause(tx, repo.for_update(tx.conn.raw, card_id))
    return len(ids)


async def _refund(tx: Tx, card, rule: str) -> dict:
    """End a card and send its money back by the purchase route. `card` is a row read in this write."""
    if card.status == "refunded":
        raise Conflict("This card has already been refunded.", "card_already_refunded")
    card = await redemptions.void_pending_holds(tx, card, reason=rule)
    amount = refund_amount(card, rule)
    merchant_share = card.escrow - amount
    seq = redemptions.append_card_entry(
        tx,
        "refund",
        card,
        amount=amount,
        merchant_share=merchant_share,
        rule=rule,
        currency=card.currency,
        payment_method=card.payment_method,
        held_delta=0,
    )
    await repo.set_refunded(
        tx.conn,
        card.id,
        escrow=0,
        held=0,
        units_held=0,
        refunded=card.refunded + amount,
        released=card.released + merchant_share,
        refund_rule=rule,
        ended_at=tx.now,
    )
    await events.card_refunded(tx, card.merchant_id, amount, merchant_share, card.consumer_id)
    out = {
        "card_id": card.id,
        "amount": amount,
        "merchant_share": merchant_share,
        "rule": rule,
        "currency": card.currency,
        "payment": payment_out(card),
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
