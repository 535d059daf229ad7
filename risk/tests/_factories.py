"""Test helpers: build Indicators from plain numbers without going through counters."""

from __future__ import annotations

from risk.indicators import Indicators

# An established, quiet merchant: every judged value at 0, well above min_cards.
_BASE = dict(
    window_issued=1_000_000,
    window_released=400_000,
    window_refunded=0,
    window_cards_sold=100,
    window_redemptions_asked=50,
    window_redemptions_rejected=0,
    all_time_issued=5_000_000,
    all_time_released=3_000_000,
    all_time_refunded=0,
    all_time_cards_sold=500,
    escrow_outstanding=2_000_000,
    last_7_days_issued=0,
    prior_weeks_issued=0,
    prior_weeks=8,
    redemption_rate_bp=4_000,
    refund_rate_bp=0,
    complaint_rate_bp=0,
    issuance_surge_bp=0,
    rejection_rate_bp=0,
    overdue_complaints=0,
    complaints=0,
    complaints_filed=0,
    refund_consumers=50,
    rejection_consumers=50,
)


def make_indicators(**overrides: int) -> Indicators:
    unknown = set(overrides) - set(_BASE)
    assert not unknown, unknown
    return Indicators(**{**_BASE, **overrides})
