"""Redemptions' answer models: the redemption (核销) in each state, and the card's balance after a confirm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from service.cards.schemas import FenValue, Time, Units
from service.http.common import Strict


class Redemption(Strict):
    id: str
    card_id: str
    merchant_id: str
    consumer_id: str
    status: Literal["pending", "confirmed", "rejected", "cancelled", "expired"]
    units: Units
    hold_amount: Annotated[int, Field(description="Escrow held for this ask, fen")]
    release_amount: Annotated[int | None, Field(description="Released to the merchant on confirm, fen")]
    created_at: Time
    expires_at: Time
    answered_at: Time | None
    ledger_seq: int | None = Field(description="The answer's ledger entry (release or void): the receipt")


class AskedRedemption(Redemption):
    hold_ledger_seq: int = Field(description="The hold's ledger entry")


class BalanceAfterConfirm(Strict):
    escrow: FenValue
    held: FenValue
    available: FenValue
    units_used: Units
    units_left: Units


class ConfirmedRedemption(Redemption):
    card_balance: BalanceAfterConfirm
