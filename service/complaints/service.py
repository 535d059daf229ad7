"""Complaints (投诉): consumers file, merchants respond within 24 hours, regulators resolve."""

from __future__ import annotations

from datetime import datetime, timedelta

from service.cards import repository as cards
from service.complaints import repository
from service.core.clock import shown
from service.core.ids import new_id
from service.db.writer import Tx
from service.event_log.service import emit
from service.health import events
from service.http.errors import Conflict, NotFound
from service.merchants import repository as merchants

RESPONSE_HOURS = 24


COMPLAINT_FIELDS = tuple(
    "id merchant_id consumer_id card_id category text status response responded_at resolution resolution_note"
    " resolved_at created_at due_at".split()
)
COMPLAINT_TIMES = frozenset({"responded_at", "resolved_at", "created_at", "due_at"})


def complaint_out(c, now: datetime) -> dict:
    return {**shown(c, COMPLAINT_FIELDS, COMPLAINT_TIMES), "overdue": c.status == "open" and c.due_at <= now}


async def file(tx: Tx, consumer_id: str, merchant_id: str, card_id: str | None, category: str, text: str) -> dict:
    if await merchants.get(tx.conn, merchant_id) is None:
        raise NotFound("No such merchant.", "merchant_not_found")
    if card_id is not None:
        card = await cards.card(tx.conn, card_id)
        if card is None or card.consumer_id != consumer_id or card.merchant_id != merchant_id:
            raise NotFound("No such card of yours at this merchant.", "card_not_found")
        card_holder = True
    else:
        # Anyone may file (the complaint is kept and answered), but under the default policy only a
        # consumer who holds or held a card here moves the health code (SPEC §3).
        card_holder = await cards.holds_card_at(tx.conn, consumer_id, merchant_id)
    stored = await repository.add(
        tx.conn,
        id=new_id("cmp"),
        merchant_id=merchant_id,
        consumer_id=consumer_id,
        card_id=card_id,
        category=category,
        text=text,
        created_at=tx.now,
        due_at=tx.now + timedelta(hours=RESPONSE_HOURS),
        card_holder=card_holder,
    )
    await events.complaint_filed(tx, merchant_id)
    return _emitted(tx, "complaint.filed", stored)


async def respond(tx: Tx, merchant_id: str, complaint_id: str, text: str) -> dict:
    c = await repository.get(tx.conn, complaint_id)
    if c.merchant_id != merchant_id:
        raise NotFound("No such complaint.", "complaint_not_found")
    if c.status != "open":
        raise Conflict(f"The complaint is already {c.status}.", "complaint_not_open")
    changed = await repository.change(tx.conn, c.id, status="responded", response=text, responded_at=tx.now)
    await events.complaint_changed(tx, merchant_id)
    return _emitted(tx, "complaint.responded", changed)


async def resolve(tx: Tx, complaint_id: str, resolution: str, note: str | None) -> dict:
    c = await repository.get(tx.conn, complaint_id)
    if c.status == "resolved":
        raise Conflict("The complaint is already resolved.", "complaint_already_resolved")
    values = dict(status="resolved", resolution=resolution, resolution_note=note, resolved_at=tx.now)
    changed = await repository.change(tx.conn, c.id, **values)
    await events.complaint_changed(tx, c.merchant_id)
    return _emitted(tx, "complaint.resolved", changed)


def _emitted(tx: Tx, type_: str, row) -> dict:
    out = complaint_out(row, tx.now)
    emit(tx, type_, out, merchant_id=row.merchant_id, consumer_id=row.consumer_id)
    return out
