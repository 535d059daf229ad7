from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.cards.schemas import NulFree
from service.http.common import Fen, Name, Page, Strict

Count = Annotated[int, Field(strict=True, ge=1, le=100_000)]


class ProductCreate(Strict):
    type: Literal["stored_value", "count", "period"]
    name: Annotated[Name, NulFree]
    price: Fen
    face_value: Fen | None = Field(
        None, description="stored_value: face value in fen, ≥ price (the bonus is face − price)"
    )
    uses: Count | None = Field(None, description="count: total uses, bonus uses included")
    bonus_uses: Annotated[int, Field(strict=True, ge=0, le=100_000)] | None = None
    periods: Annotated[int, Field(strict=True, ge=1, le=1000)] | None = None
    period_days: Annotated[int, Field(strict=True, ge=1, le=366)] | None = None
    valid_days: Annotated[int, Field(strict=True, ge=1, le=3660)]
    list_price: Fen | None = Field(
        None,
        description="Refund valuation per unit, fen: 1 per face fen; per use or period default price / paid units rounded up",
    )


class Product(BaseModel):
    id: str
    merchant_id: str
    type: Literal["stored_value", "count", "period"]
    name: str
    price: int = Field(description="Price in fen")
    currency: str
    face_value: int | None = Field(description="stored_value: face value in fen")
    uses: int | None = Field(description="count: total uses, bonus uses included")
    bonus_uses: int | None
    periods: int | None
    period_days: int | None
    valid_days: int
    list_price: int = Field(description="Refund valuation per unit, fen")
    on_sale: bool


class ProductPage(Page[Product]):
    pass
