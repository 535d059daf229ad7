"""Complaints (投诉): consumers file, merchants respond within 24 hours, regulators resolve."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from service.complaints import repository
from service.core.clock import shown
from service.core.ids import new_id
from service.db.models import Card, Merchant
from service.db.writer import Tx
from service.event_log.service import emit
from service.health import events
from service.http.common import read_or_404
from service.http.errors import Conflict, NotFound

complaints_t = repository.complaints_t
RESPONSE_HOURS = 24


COMPLAINT_FIELDS = tuple(
    "id merchant_id consumer_id card_id category text status response responded_at resolution resolution_note"
    " resolved_at created_at due_at".split()
)
COMPLAINT_TIMES = frozenset({"responded_at", "resolved_at", "created_at", "due_at"})


def complaint_out(c, now: datetime) -> dict:
    return {**shown(c, COMPLAINT_FIELDS, COMPLAINT_TIMES), "overdue": c.status == "open" and c.due_at <= now}


async def file(tx: Tx, consumer_id: str, merchant_id: str, card_id: str | None, category: str, text: str) -> dict:
    merchants = Merchant.__table__
    stmt = select(merchants.c.id).where(merchants.c.id == merchant_id)
    await read_or_404(tx.conn, stmt, "No such merchant.", "merchant_not_found")
    cards = Card.__table__
    if card_id is not None:
        card = (
            await tx.conn.execute(select(cards.c.consumer_id, cards.c.merchant_id).where(cards.c.id == card_id))
        ).first()
        if card is None or card.consumer_id != consumer_id or card.merchant_id != merchant_id:
            raise NotFound("No such card of yours at this merchant.", "card_not_found")
        card_holder = True
    else:
        # Anyone may file (the complaint is kept and answered), but under the default policy only a
        # consumer who holds or held a card here moves the health code (SPEC §3).
        card_holder = (
            await tx.conn.execute(
                select(cards.c.id)
                .where(cards.c.consumer_id == consumer_id, cards.c.merchant_id == merchant_id)
                .limit(1)
            )
        ).first() is not None
    row = dict(
        id=new_id("cmp"),
        merchant_id=merchant_id,
        consumer_id=consumer_id,
        card_id=card_id,
        category=category,
        text=text,
        status="open",
        overdue=False,
        created_at=tx.now,
        due_at=tx.now + timedelta(hours=RESPONSE_HOURS),
        card_holder=card_holder,
    )
    stored = await repository.add(tx.conn, row)
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
