"""Request and response models of complaints (投诉)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from service.cards.schemas import NulFree
from service.http.common import Page, Strict
from service.http.common import Text as _Text

Id = Annotated[str, StringConstraints(min_length=1, max_length=64), NulFree]
Text = Annotated[_Text, NulFree]
Category = Literal[
    "service_quality", "refund_refused", "false_advertising", "closure_or_runaway", "price_or_terms", "other"
]


class ComplaintCreate(Strict):
    merchant_id: Id
    card_id: Id | None = None
    category: Category
    text: Text


class ResponseBody(Strict):
    text: Text


class ResolutionBody(Strict):
    resolution: Literal["upheld", "dismissed", "mediated"]
    note: Text | None = None


class Complaint(BaseModel):
    id: str
    merchant_id: str
    consumer_id: str
    card_id: str | None
    category: str
    text: str
    status: Literal["open", "responded", "resolved"]
    response: str | None
    responded_at: str | None
    resolution: str | None
    resolution_note: str | None
    resolved_at: str | None
    created_at: str
    due_at: str = Field(description="The merchant must respond by then (24 hours after filing)")
    overdue: bool


class ComplaintPage(Page[Complaint]):
    pass
