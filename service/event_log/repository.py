"""Every statement the event stream's routes run on the events table."""

from __future__ import annotations

from sqlalchemy import select

from service.event_log.service import events_t, new_events, visible_to
from service.http.common import long_poll
from service.http.context import AppContext


async def events_after(
    ctx: AppContext, role: str, party_id: str, after: int | None, limit: int, types: list[str] | None, wait: float
) -> list:
    """The caller's events after the cursor, oldest first; with `wait`, long-polled until one comes."""
    stmt = visible_to(select(events_t), role, party_id).order_by(events_t.c.seq).limit(limit)
    if after is not None:
        stmt = stmt.where(events_t.c.seq > after)
    if types:
        stmt = stmt.where(events_t.c.type.in_(types))
    return await long_poll(ctx, stmt, wait, new_events)
