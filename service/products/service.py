"""Card products (发行预付卡): stored-value with bonus, count cards, period cards."""

from __future__ import annotations

from service.core.clock import shown
from service.core.ids import new_id
from service.core.money import default_list_price
from service.db.writer import Tx
from service.http.errors import Conflict, Unprocessable
from service.merchants import repository as merchants
from service.products import repository
from service.products.schemas import ProductCreate

PRODUCT_FIELDS = tuple(
    "id merchant_id type name price currency face_value uses bonus_uses periods period_days valid_days list_price"
    " on_sale".split()
)


def product_out(p) -> dict:
    return shown(p, PRODUCT_FIELDS)


def validated_fields(body: ProductCreate, price_cap: int) -> dict:
    """Check a product's fields for its type; returns the columns to store."""
    if body.price > price_cap:
        raise Unprocessable(f"price exceeds the per-card cap of {price_cap} fen.", "price_over_cap")
    foreign = {
        "stored_value": ("uses", "bonus_uses", "periods", "period_days"),
        "count": ("face_value", "periods", "period_days"),
        "period": ("face_value", "uses", "bonus_uses"),
    }[body.type]
    for name in foreign:
        if getattr(body, name) is not None:
            raise Unprocessable(f"{name} does not apply to a {body.type} card.", "field_not_applicable")
    cols = dict(face_value=None, uses=None, bonus_uses=None, periods=None, period_days=None)
    if body.type == "stored_value":
        if body.face_value is None:
            raise Unprocessable("face_value is required for a stored_value card.", "missing_field")
        if body.face_value < body.price:
            raise Unprocessable("face_value must be at least the price.", "face_value_below_price")
        if body.list_price not in (None, 1):
            raise Unprocessable("A stored_value card's list price is 1 fen per face fen.", "invalid_list_price")
        cols.update(face_value=body.face_value, units_total=body.face_value, list_price=1)
    elif body.type == "count":
        if body.uses is None:
            raise Unprocessable("uses is required for a count card.", "missing_field")
        bonus = body.bonus_uses or 0
        if bonus >= body.uses:
            raise Unprocessable("bonus_uses must be fewer than uses.", "invalid_bonus_uses")
        cols.update(
            uses=body.uses,
            bonus_uses=bonus,
            units_total=body.uses,
            list_price=body.list_price or default_list_price(body.price, body.uses - bonus),
        )
    else:
        if body.periods is None or body.period_days is None:
            raise Unprocessable("periods and period_days are required for a period card.", "missing_field")
        if body.valid_days <= body.periods * body.period_days:
            # The last period ends at periods × period_days; the card must outlive it to redeem it.
            raise Unprocessable(
                "valid_days must exceed periods × period_days, so the last period can be redeemed.",
                "validity_too_short",
            )
        cols.update(
            periods=body.periods,
            period_days=body.period_days,
            units_total=body.periods,
            list_price=body.list_price or default_list_price(body.price, body.periods),
        )
    return cols


async def publish(tx: Tx, merchant_id: str, body: ProductCreate, price_cap: int) -> dict:
    cols = validated_fields(body, price_cap)
    m = await merchants.get(tx.conn, merchant_id)
    if m.status in ("defaulted", "closed", "closing"):
        raise Conflict("A merchant that is closing, closed or defaulted publishes no products.", "merchant_not_selling")
    pid = new_id("prod")
    await repository.add(
        tx.conn,
        id=pid,
        merchant_id=merchant_id,
        type=body.type,
        name=body.name,
        price=body.price,
        valid_days=body.valid_days,
        created_at=tx.now,
        **cols,
    )
    return product_out(await repository.get(tx.conn, pid))
