"""Request and response models of the regulators' alert feed."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from service.cards.schemas import NulFree
from service.http.common import Page, Strict, Text


class Finding(Strict):
    finding: Annotated[Text, NulFree]


class Alert(BaseModel):
    id: str
    cursor: str = Field(description="Pass as `after` to poll for the alerts after this one")
    merchant_id: str
    kind: str = Field(description="code_change, complaint_overdue, closure_announced, merchant_defaulted, …")
    from_code: str | None
    to_code: str | None
    reasons: list[dict[str, Any]]
    status: str = Field(description="open, acknowledged or resolved")
    finding: str | None
    created_at: str
    acknowledged_at: str | None
    resolved_at: str | None
    ledger_seq: int


class AlertPage(Page[Alert]):
    pass
