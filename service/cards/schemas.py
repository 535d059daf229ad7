"""Cards' request and answer models: buying a card, asking a redemption, the card, its refund."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from service.http.common import Strict


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


# ---------------------------------------------------------------- answers

PaymentMethod = Literal["wechat_pay", "alipay", "unionpay", "bank_card", "bank_transfer"]
RefundRule = Literal["cooling_off", "consumer_quit", "expiry", "merchant_closure", "merchant_default"]
FenValue = Annotated[int, Field(description="Amount in fen (分, 1/100 yuan), an integer")]
Units = Annotated[int, Field(description="Units of the card: fen of face value, uses or periods by its type")]
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"}, description="UTC, ISO 8601")]


class PaymentRoute(Strict):
    method: PaymentMethod
    reference: str


class CardBalance(Strict):
    escrow: FenValue
    held: FenValue
    available: Annotated[int, Field(description="escrow − held, fen")]
    released: FenValue
    refunded: FenValue
    units_total: Units
    units_used: Units
    units_held: Units
    units_left: Units
    units_available: Units


class Card(Strict):
    id: str
    product_id: str
    merchant_id: str
    consumer_id: str
    type: Literal["stored_value", "count", "period"]
    status: Literal["active", "exhausted", "refunded"]
    price: FenValue
    currency: str
    purchased_at: Time
    expires_at: Time
    cooling_off_ends_at: Time
    payment: PaymentRoute
    list_price: FenValue
    refund_rule: RefundRule | None
    ended_at: Time | None
    balance: CardBalance
    expired: bool = Field(description="Active but past its expiry (the sweeper refunds it)")


class PurchasedCard(Card):
    ledger_seq: int = Field(description="The purchase's ledger entry")


class Refund(Strict):
    card_id: str
    amount: Annotated[int, Field(description="Paid back by the purchase route, fen")]
    merchant_share: Annotated[int, Field(description="Kept by the merchant (used at list price), fen")]
    rule: RefundRule
    currency: str
    payment: PaymentRoute
    ledger_seq: int


class RefundQuote(Strict):
    card_id: str
    amount: Annotated[int, Field(description="What a refund now would pay back, fen")]
    merchant_share: FenValue
    rule: RefundRule
    currency: str
    refundable: bool
    payment: PaymentRoute
