"""Request and response models of health codes, the public directory, the risk policy and inspection draws."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from service.cards.schemas import NulFree
from service.http.common import Strict


class DrawRequest(Strict):
    inspectors: list[Annotated[str, StringConstraints(min_length=1, max_length=100), NulFree]]
    seed: Annotated[str, StringConstraints(min_length=1, max_length=200), NulFree] | None = None


class HealthWarning(BaseModel):
    published_at: str


class HealthCode(BaseModel):
    merchant_id: str
    code: str = Field(description="green, yellow or red")
    since: str
    warning: HealthWarning | None = Field(description="Published while the code is red")
    delisted: bool
    indicators: dict[str, Any]
    reasons: list[dict[str, Any]]
    policy_version: int
    new_merchant: bool
    notes: list[str]


class DirectoryEntry(BaseModel):
    id: str
    name: str
    category: str
    code: str
    since: str
    status: str
    selling: bool


class DirectoryPage(BaseModel):
    items: list[DirectoryEntry]
    next_cursor: str | None


class Threshold(BaseModel):
    yellow: int
    red: int


class InspectionRatios(BaseModel):
    green: int = Field(description="bp of green merchants drawn")
    yellow: int
    red: int


class RiskPolicy(BaseModel):
    """One version of the risk policy (`risk.Policy.to_dict`); rates in bp."""

    version: int
    window_days: int
    min_cards: int
    surge_weeks: int
    grace_days: int
    inspection_ratios: InspectionRatios
    refund_rate: Threshold
    complaint_rate: Threshold
    issuance_surge: Threshold
    rejection_rate: Threshold
    overdue_complaints: Threshold
    complaints: Threshold
    complaint_needs_card: bool
    complaint_once_per_consumer: bool
    dismissed_complaints_count: bool
    min_refund_consumers: int
    min_rejection_consumers: int
    min_complaint_consumers: int


class DrawnMerchant(BaseModel):
    merchant_id: str
    code: str


class Inspection(BaseModel):
    merchant_id: str
    inspector: str


class InspectionDraw(BaseModel):
    id: str
    seed: str
    policy_version: int
    drawn_at: str
    ratios_bp: InspectionRatios
    inspectors: list[str]
    population: list[DrawnMerchant]
    inspections: list[Inspection]
