"""Request and response models of credit recommendation (信用推介)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.http.common import Page, Strict


class Consent(Strict):
    consent: bool


class ConsentState(BaseModel):
    merchant_id: str
    consent: bool
    updated_at: str | None
    ledger_seq: int | None


class MonthCode(BaseModel):
    month: str = Field(description="YYYY-MM (UTC)")
    code: str = Field(description="The worst health code held in the month")


class CodeHistory(BaseModel):
    months: list[MonthCode]
    green: int
    yellow: int
    red: int


class MonthFigures(BaseModel):
    """A month's money (released, issued, refunded: fen) and counts; `complete` once the month is over."""

    month: str
    released: int
    issued: int
    refunded: int
    cards_sold: int
    complaints: int
    complete: bool


class Recommendation(BaseModel):
    recommended: bool
    reasons: list[str]
    failed: list[str]
    judged_refund_rate_bp: int
    judged_complaint_rate_bp: int
    policy_version: int
    policy: dict[str, Any]


class CreditReport(BaseModel):
    merchant_id: str
    name: str
    uscc: str
    category: str
    status: str
    onboarded_at: str
    months_on_platform: int
    code_history: CodeHistory
    monthly: list[MonthFigures]
    refund_rate_bp: int
    complaint_rate_bp: int
    recommendation: Recommendation
    currency: str


class CreditReportPage(Page[CreditReport]):
    pass
