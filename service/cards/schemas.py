from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from service.common import Strict

PAYMENT_METHODS = ("wechat_pay", "alipay", "unionpay", "bank_card", "bank_transfer")


class Payment(Strict):
    method: Literal["wechat_pay", "alipay", "unionpay", "bank_card", "bank_transfer"] = Field(
        description="The route the money came by; refunds go back by the same route")
    reference: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class CardPurchase(Strict):
    product_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    payment: Payment


class RedemptionAsk(Strict):
    """Exactly one of `amount` (stored_value, face fen), `uses` (count) or `periods` (period)."""
    amount: Annotated[int, Field(strict=True, ge=1, le=10**12, description="Face value to redeem, fen")] | None = None
    uses: Annotated[int, Field(strict=True, ge=1, le=100_000)] | None = None
    periods: Annotated[int, Field(strict=True, ge=1, le=1000)] | None = None


class EmptyBody(Strict):
    pass
