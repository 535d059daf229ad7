from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from service.auth import Principal, require
from service.common import After, Limit, page
from service.context import AppContext, get_ctx
from service.errors import NotFound, responses
from service.idempotency import mutate
from service.products import service
from service.products.schemas import Product, ProductCreate, ProductPage

router = APIRouter(prefix="/v1/products", tags=["products"])
t = service.products_t


@router.post("", status_code=201, response_model=Product, responses=responses(400, 401, 403, 409, 422))
async def publish_product(
    body: ProductCreate,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("merchant")),
):
    """Publish a card product (发行预付卡)."""

    async def op(tx):
        return 201, await service.publish(tx, who.party_id, body, ctx.settings.price_cap)

    return await mutate(ctx, request, who, body, op)


@router.get("", response_model=ProductPage, responses=responses(422))
async def list_products(
    ctx: AppContext = Depends(get_ctx),
    merchant_id: str | None = Query(None, max_length=64),
    limit: Limit = 50,
    after: After = None,
):
    """Products on sale, optionally of one merchant."""
    stmt = select(t).where(t.c.on_sale.is_(True)).order_by(t.c.id).limit(limit + 1)
    if merchant_id:
        stmt = stmt.where(t.c.merchant_id == merchant_id)
    if after:
        stmt = stmt.where(t.c.id > after)
    async with ctx.engines.reader.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return page([service.product_out(r) for r in rows], limit)


@router.get("/{product_id}", response_model=Product, responses=responses(404))
async def get_product(product_id: str, ctx: AppContext = Depends(get_ctx)):
    async with ctx.engines.reader.connect() as conn:
        row = (await conn.execute(select(t).where(t.c.id == product_id))).first()
    if row is None:
        raise NotFound("No such product.", "product_not_found")
    return service.product_out(row)
