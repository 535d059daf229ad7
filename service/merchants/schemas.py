from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from service.cards.schemas import Card, NulFree
from service.http.common import Name as _Name
from service.http.common import Page, Strict
from service.http.common import Text as _Text

Name = Annotated[_Name, NulFree]
Text = Annotated[_Text, NulFree]

Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40), NulFree]


class MerchantCreate(Strict):
    name: Name
    uscc: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
    category: Category


class ClosureRequest(Strict):
    effective_date: datetime
    reason: Text


class ReasonRequest(Strict):
    reason: Text


class ListFlagRequest(Strict):
    """Set (`listed: true`) or lift (`listed: false`) the abnormal-operation list or a delisting."""

    listed: bool
    reason: Text | None = None


class Merchant(BaseModel):
    id: str
    name: str
    uscc: str
    category: str
    status: str = Field(description="active, warned, delisted, closing, closed or defaulted")
    abnormal_listed: bool
    delisted: bool
    warned_at: str | None
    closure_date: str | None
    created_at: str


class OnboardedMerchant(Merchant):
    api_key: str = Field(description="The merchant's API key, shown this once")


class DefaultedMerchant(Merchant):
    cards_refunded: int
    ledger_seq: int


class MerchantStats(BaseModel):
    merchant_id: str
    issued: int = Field(description="Fen sold, all time")
    released: int = Field(description="Fen released to the merchant")
    refunded: int = Field(description="Fen refunded to consumers")
    outstanding: int = Field(description="Fen still in escrow")
    held: int = Field(description="Fen held by pending redemptions")
    cards_by_status: dict[str, int]


class CardPage(Page[Card]):
    """A page of cards, each as `GET /v1/cards/{card_id}` answers it."""
