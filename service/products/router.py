"""HTTP for card products (发行预付卡): publish, and the products on sale."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from service.http.common import After, Ctx, Limit, answer, caller, page, read
from service.http.errors import responses
from service.products import repository, service
from service.products.schemas import Product, ProductCreate, ProductPage
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1/products", tags=["products"])


@router.post("", status_code=201, response_model=Product, responses=responses(400, 401, 403, 409, 422))
async def publish_product(body: ProductCreate, request: Request, ctx: Ctx, who: caller("merchant")):
    """Publish a card product (发行预付卡)."""
    op = answer(201, service.publish, who.party_id, body, ctx.settings.price_cap)
    return await mutate(ctx, request, who, body, op)


@router.get("", response_model=ProductPage, responses=responses(422))
async def list_products(
    ctx: Ctx, merchant_id: str | None = Query(None, max_length=64), limit: Limit = 50, after: After = None
):
    """Products on sale, optionally of one merchant."""
    rows = await read(ctx, repository.on_sale_page, merchant_id, limit, after)
    return page([service.product_out(r) for r in rows], limit)


@router.get("/{product_id}", response_model=Product, responses=responses(404))
async def get_product(product_id: str, ctx: Ctx):
    return service.product_out(await read(ctx, repository.get, product_id))
