"""Test helpers: build Indicators from plain numbers without going through counters."""

from __future__ import annotations

from dataclasses import fields

from risk.indicators import Indicators

# An established, quiet merchant: every judged value at 0 (every field not named here), well above min_cards.
_BASE = {f.name: 0 for f in fields(Indicators)} | {
    "window_issued": 1_000_000,
    "window_released": 400_000,
    "window_cards_sold": 100,
    "window_redemptions_asked": 50,
    "all_time_issued": 5_000_000,
    "all_time_released": 3_000_000,
    "all_time_cards_sold": 500,
    "escrow_outstanding": 2_000_000,
    "prior_weeks": 8,
    "redemption_rate_bp": 4_000,
    "refund_consumers": 50,
    "rejection_consumers": 50,
}


def make_indicators(**overrides: int) -> Indicators:
    unknown = set(overrides) - set(_BASE)
    assert not unknown, unknown
    return Indicators(**{**_BASE, **overrides})
