"""Every statement on the products table: a published product, and the products on sale."""

from __future__ import annotations

from sqlalchemy import insert, select

from service.db.models import Product
from service.http.common import read_or_404

products_t = Product.__table__


async def on_sale_page(conn, merchant_id: str | None, limit: int, after: str | None) -> list:
    """Products on sale in id order after the cursor, one more than `limit` (the next page's sign)."""
    stmt = select(products_t).where(products_t.c.on_sale.is_(True)).order_by(products_t.c.id).limit(limit + 1)
    if merchant_id:
        stmt = stmt.where(products_t.c.merchant_id == merchant_id)
    if after:
        stmt = stmt.where(products_t.c.id > after)
    return (await conn.execute(stmt)).all()


async def get(conn, product_id: str):
    stmt = select(products_t).where(products_t.c.id == product_id)
    return await read_or_404(conn, stmt, "No such product.", "product_not_found")


async def add(conn, **values) -> None:
    """A new product, on sale and priced in CNY (the model's defaults)."""
    await conn.execute(insert(products_t).values(**values))
