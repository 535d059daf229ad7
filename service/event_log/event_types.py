"""The event types (SPEC §9): what the event stream and webhooks carry, and which an auditor sees."""

from __future__ import annotations

MONEY_TYPES = (
    "card.purchased",
    "card.refunded",
    "card.exhausted",
    "redemption.requested",
    "redemption.confirmed",
    "redemption.rejected",
    "redemption.cancelled",
    "redemption.expired",
)
MERCHANT_TYPES = (
    "merchant.health_changed",
    "merchant.warned",
    "merchant.delisted",
    "merchant.relisted",
    "merchant.defaulted",
    "merchant.closure_announced",
    "merchant.closed",
    "merchant.abnormal_listed",
    "merchant.abnormal_lifted",
)
COMPLAINT_TYPES = ("complaint.filed", "complaint.responded", "complaint.resolved", "complaint.overdue")
OTHER_TYPES = ("alert.created", "checkpoint.published", "webhook_endpoint.disabled")
EVENT_TYPES = MONEY_TYPES + MERCHANT_TYPES + COMPLAINT_TYPES + OTHER_TYPES
AUDITOR_TYPES = MONEY_TYPES + ("checkpoint.published",)
