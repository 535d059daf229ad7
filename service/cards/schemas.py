from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from service.common import Strict


def _refuse_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000: refuse it as bad input (422), not as a failed write batch (503).
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


NulFree = AfterValidator(_refuse_nul)


class Payment(Strict):
    method: Literal["wechat_pay", "alipay", "unionpay", "bank_card", "bank_transfer"] = Field(
        description="The route the money came by; refunds go back by the same route"
    )
    reference: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), NulFree]


class CardPurchase(Strict):
    product_id: Annotated[str, StringConstraints(min_length=1, max_length=64), NulFree]
    payment: Payment


class RedemptionAsk(Strict):
    """Exactly one of `amount` (stored_value, face fen), `uses` (count) or `periods` (period)."""

    amount: Annotated[int, Field(strict=True, ge=1, le=10**12, description="Face value to redeem, fen")] | None = None
    uses: Annotated[int, Field(strict=True, ge=1, le=100_000)] | None = None
    periods: Annotated[int, Field(strict=True, ge=1, le=1000)] | None = None


class EmptyBody(Strict):
    pass
