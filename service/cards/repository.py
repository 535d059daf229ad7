"""Every statement on the cards table (and the product and merchant rows a purchase reads).

The rules live in `service/cards/service.py`, `service/cards/refunds.py` and `service/redemptions/`;
this module only reads and writes rows. The redemption hot path (ask, confirm, void) writes through
the writer's raw connection (`tx.conn.raw`, see `service/db/raw.py`): those statements keep one text
each, so a batch's writes of one kind merge into one statement on PostgreSQL. The rest is Core.
"""

from __future__ import annotations

from sqlalchemy import func, insert, select, update

from service.db.models import Card, Merchant, Product
from service.db.raw import CardRow

cards_t = Card.__table__
products_t = Product.__table__
merchants_t = Merchant.__table__

# -- raw, on the writer's connection ------------------------------------------------------------
SET_HELD = "UPDATE cards SET units_held = ?, held = ? WHERE id = ?"
SET_REDEEMED = (
    "UPDATE cards SET units_used = ?, units_held = ?, held = ?, escrow = ?, released = ?, status = ? WHERE id = ?"
)


def for_update(raw, card_id: str) -> CardRow | None:
    """The card row inside a write (writes are serialised by the writer's lock on the ledger head)."""
    return raw.card(card_id)


def with_merchant_status(raw, card_id: str) -> tuple[CardRow, str] | None:
    """The card and its merchant's status, in one statement (prefetched for a quick run)."""
    return raw.card_and_merchant_status(card_id)


def set_held(raw, card_id: str, units_held: int, held: int) -> None:
    raw.run(SET_HELD, (units_held, held, card_id))


def set_redeemed(
    raw, card_id: str, units_used: int, units_held: int, held: int, escrow: int, released: int, status: str
) -> None:
    raw.run(SET_REDEEMED, (units_used, units_held, held, escrow, released, status, card_id))


# -- Core ---------------------------------------------------------------------------------------
async def product(conn, product_id: str):
    return (await conn.execute(select(products_t).where(products_t.c.id == product_id))).first()


async def merchant(conn, merchant_id: str):
    return (await conn.execute(select(merchants_t).where(merchants_t.c.id == merchant_id))).first()


async def merchant_status(conn, merchant_id: str) -> str | None:
    row = (await conn.execute(select(merchants_t.c.status).where(merchants_t.c.id == merchant_id))).first()
    return None if row is None else row.status


async def card(conn, card_id: str):
    return (await conn.execute(select(cards_t).where(cards_t.c.id == card_id))).first()


async def holds_card_at(conn, consumer_id: str, merchant_id: str) -> bool:
    """Whether the consumer holds or held any card of the merchant."""
    stmt = select(cards_t.c.id).where(cards_t.c.consumer_id == consumer_id, cards_t.c.merchant_id == merchant_id)
    return (await conn.execute(stmt.limit(1))).first() is not None


async def payment_used(conn, method: str, reference: str) -> bool:
    """Whether a card was already funded by this payment (SPEC §12)."""
    stmt = (
        select(cards_t.c.id)
        .where(cards_t.c.payment_method == method, cards_t.c.payment_reference == reference)
        .limit(1)
    )
    return (await conn.execute(stmt)).first() is not None


async def insert_card(conn, **values) -> None:
    await conn.execute(insert(cards_t).values(**values))


async def set_refunded(conn, card_id: str, **values) -> None:
    """End a card: status refunded, its escrow paid out (the values say how)."""
    await conn.execute(update(cards_t).where(cards_t.c.id == card_id).values(status="refunded", **values))


async def page_of_party(conn, party_column: str, party_id: str, limit: int, after: str | None) -> list:
    """Up to `limit` + 1 cards of a party (`party_column`: consumer_id or merchant_id) after the cursor."""
    stmt = select(cards_t).where(cards_t.c[party_column] == party_id).order_by(cards_t.c.id).limit(limit + 1)
    if after:
        stmt = stmt.where(cards_t.c.id > after)
    return (await conn.execute(stmt)).all()


async def live_ids_of_merchant(conn, merchant_id: str, limit: int | None = None) -> list[str]:
    """A merchant's active cards, by id."""
    stmt = (
        select(cards_t.c.id)
        .where(cards_t.c.merchant_id == merchant_id, cards_t.c.status == "active")
        .order_by(cards_t.c.id)
    )
    if limit:
        stmt = stmt.limit(limit)
    return [r.id for r in (await conn.execute(stmt)).all()]


async def expired_ids(conn, now, limit: int) -> list[str]:
    """Active cards whose validity ended by `now`, soonest first."""
    stmt = (
        select(cards_t.c.id)
        .where(cards_t.c.status == "active", cards_t.c.expires_at <= now)
        .order_by(cards_t.c.expires_at)
        .limit(limit)
    )
    return [r.id for r in (await conn.execute(stmt)).all()]


async def merchant_totals(conn, merchant_id: str) -> tuple[tuple[int, int, int, int, int], dict[str, int]]:
    """(issued, released, refunded, outstanding, held) over a merchant's cards, and its cards by status."""
    c = cards_t.c
    row = (
        await conn.execute(
            select(
                *(func.coalesce(func.sum(col), 0) for col in (c.price, c.released, c.refunded, c.escrow, c.held))
            ).where(c.merchant_id == merchant_id)
        )
    ).first()
    by_status = (
        await conn.execute(select(c.status, func.count()).where(c.merchant_id == merchant_id).group_by(c.status))
    ).all()
    return tuple(int(v) for v in row), {s: int(n) for s, n in by_status}  # type: ignore[return-value]
