"""Every statement the merchant lifecycle makes on the merchants table (and a new merchant's API key).

Core statements on the writer's connection (or a reader's); the rules are in
`service/merchants/service.py`. A merchant's cards are read through `service/cards/repository.py`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update

from service.db.models import ApiToken, Merchant

merchants_t = Merchant.__table__
tokens_t = ApiToken.__table__


async def get(conn, merchant_id: str):
    return (await conn.execute(select(merchants_t).where(merchants_t.c.id == merchant_id))).first()


async def uscc_taken(conn, uscc: str) -> bool:
    return (await conn.execute(select(merchants_t.c.id).where(merchants_t.c.uscc == uscc))).first() is not None


async def insert_merchant(conn, merchant_id: str, name: str, uscc: str, category: str, now: datetime) -> None:
    await conn.execute(
        insert(merchants_t).values(
            id=merchant_id,
            name=name,
            uscc=uscc,
            category=category,
            status="active",
            abnormal=False,
            delisted=False,
            created_at=now,
        )
    )


async def insert_key(conn, digest: str, merchant_id: str, now: datetime) -> None:
    """The merchant's API key (its hash; the key itself is shown once)."""
    await conn.execute(
        insert(tokens_t).values(token_hash=digest, role="merchant", party_id=merchant_id, created_at=now)
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
