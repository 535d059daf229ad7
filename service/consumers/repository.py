"""Statements the consumer routes read: the confirmation inbox and the test SMS outbox."""

from __future__ import annotations

from sqlalchemy import select

from service.consumers.sms import outbox_t
from service.db.models import Redemption

redemptions_t = Redemption.__table__


def inbox(consumer_id: str, status: str | None, limit: int, after: str | None):
    """The consumer's redemptions in id order after the cursor (one more than `limit`)."""
    t = redemptions_t
    stmt = select(t).where(t.c.consumer_id == consumer_id).order_by(t.c.id).limit(limit + 1)
    if status:
        stmt = stmt.where(t.c.status == status)
    if after:
        stmt = stmt.where(t.c.id > after)
    return stmt


async def outbox(conn, lookup: str, limit: int = 50) -> list:
    """The last `limit` texts sent to a phone (by its vault lookup key), oldest first."""
    t = outbox_t
    stmt = select(t.c.text, t.c.code, t.c.sent_at).where(t.c.phone_lookup == lookup).order_by(t.c.id.desc())
    return list(reversed((await conn.execute(stmt.limit(limit))).all()))
