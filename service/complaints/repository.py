"""Statements on the complaints table."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from service.db.models import Complaint
from service.http.common import read_or_404

complaints_t = Complaint.__table__


async def add(conn, **values):
    """Store a new complaint, open and not overdue (the model's defaults); returns it as stored."""
    await conn.execute(insert(complaints_t).values(**values))
    return (await conn.execute(select(complaints_t).where(complaints_t.c.id == values["id"]))).first()


async def get(conn, complaint_id: str):
    stmt = select(complaints_t).where(complaints_t.c.id == complaint_id)
    return await read_or_404(conn, stmt, "No such complaint.", "complaint_not_found")


async def change(conn, complaint_id: str, **values):
    """Set `values` on the complaint; returns it as changed."""
    await conn.execute(update(complaints_t).where(complaints_t.c.id == complaint_id).values(**values))
    return (await conn.execute(select(complaints_t).where(complaints_t.c.id == complaint_id))).first()


async def page(conn, consumer_id: str | None, merchant_ids: list[str], status: str | None, limit: int, after):
    """Complaints in id order after the cursor (one more than `limit`), of the consumer if given and of
    every merchant in `merchant_ids` (the caller's scope and the filter asked for)."""
    t = complaints_t
    stmt = select(t).order_by(t.c.id).limit(limit + 1)
    if consumer_id:
        stmt = stmt.where(t.c.consumer_id == consumer_id)
    for merchant_id in merchant_ids:
        stmt = stmt.where(t.c.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(t.c.status == status)
    if after:
        stmt = stmt.where(t.c.id > after)
    return (await conn.execute(stmt)).all()


async def newly_overdue(conn, now, limit: int) -> list:
    """Open complaints past their due time not yet marked overdue."""
    t = complaints_t
    stmt = select(t.c.id, t.c.merchant_id).where(t.c.status == "open", t.c.overdue.is_(False), t.c.due_at <= now)
    return (await conn.execute(stmt.limit(limit))).all()
