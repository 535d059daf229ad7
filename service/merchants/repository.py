"""Every statement the merchant lifecycle makes on the merchants table.

Core statements on the writer's connection (or a reader's); the rules are in
`service/merchants/service.py`. A merchant's cards are read through `service/cards/repository.py`, its
API keys issued through `service/keys_api/repository.py`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update

from service.db.models import Merchant

merchants_t = Merchant.__table__


async def get(conn, merchant_id: str):
    return (await conn.execute(select(merchants_t).where(merchants_t.c.id == merchant_id))).first()


async def uscc_taken(conn, uscc: str) -> bool:
    return (await conn.execute(select(merchants_t.c.id).where(merchants_t.c.uscc == uscc))).first() is not None


async def insert_merchant(conn, merchant_id: str, name: str, uscc: str, category: str, now: datetime) -> None:
    """A new merchant: its status, list flags and dates start at the model's defaults (active, on no list)."""
    await conn.execute(
        insert(merchants_t).values(id=merchant_id, name=name, uscc=uscc, category=category, created_at=now)
    )


async def set_values(conn, merchant_id: str, **values) -> None:
    """Change a merchant's row: status, closure, default reason, the list flags."""
    await conn.execute(update(merchants_t).where(merchants_t.c.id == merchant_id).values(**values))


async def closing_due(conn, now: datetime, limit: int) -> list[str]:
    """Merchants whose announced closure date has come."""
    stmt = (
        select(merchants_t.c.id)
        .where(merchants_t.c.status == "closing", merchants_t.c.closure_date <= now)
        .limit(limit)
    )
    return [r.id for r in (await conn.execute(stmt)).all()]
