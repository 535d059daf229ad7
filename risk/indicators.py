"""Risk indicators: the figures a health code is judged on, computed from counters.

This module owns `compute_indicators` and the `Indicators` it returns (the `indicators`
object of a merchant's health, spec §7). It only does arithmetic on integers the service
hands it; it knows nothing about thresholds (that is `classify`).

Units are in the field names: `_bp` is basis points (1% = 100 bp, 100% = 10000 bp); money
fields are int fen; counts are counts.

Rounding: every ratio is rounded DOWN (floor division). With integer thresholds and "crosses
means >=", floor is exact: floor(x) >= t exactly when x >= t, so a merchant crosses a
threshold only if the true, unrounded ratio has reached it.

Division by zero: a ratio with a zero denominator is 0 ("nothing to divide"). That means a
merchant that sold nothing in the window shows a refund and complaint rate of 0 even if it
refunded or was complained about; the count signals (complaints, overdue complaints) are what
catch that merchant. See risk/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .counters import MerchantCounters

BP_WHOLE = 10_000  # 100% in basis points


def ratio_bp(numerator: int, denominator: int) -> int:
    """numerator / denominator in basis points, rounded down; 0 when the denominator is 0.
    May exceed 10000 (e.g. refunds in the window of cards sold before it)."""
    if denominator == 0:
        return 0
    return numerator * BP_WHOLE // denominator


@dataclass(frozen=True)
class Indicators:
    """One merchant's indicators at one moment. All fields are ints (JSON-safe as is)."""

    # Money in the rolling window (fen) and card count.
    window_issued: int
    window_released: int
    window_refunded: int
    window_cards_sold: int
    window_redemptions_asked: int
    window_redemptions_rejected: int
    # Money since onboarding (fen) and card count.
    all_time_issued: int
    all_time_released: int
    all_time_refunded: int
    all_time_cards_sold: int
    escrow_outstanding: int  # fen still held in escrow for this merchant's cards, now
    # Inputs of the issuance surge, shown so anyone can redo the division.
    last_7_days_issued: int
    prior_weeks_issued: int
    prior_weeks: int
    # Ratios (window), rounded down.
    redemption_rate_bp: int  # released / issued; reported, not judged
    refund_rate_bp: int  # refunded / issued
    complaint_rate_bp: int  # complaints / cards sold; 100 bp = 1 complaint per 100 cards
    issuance_surge_bp: int  # last 7 days / weekly average of the prior weeks; 10000 = same pace
    rejection_rate_bp: int  # rejected asks / asks
    # Count-based signals.
    overdue_complaints: int  # counted complaints unanswered after 24 hours, now (distinct consumers by default)
    complaints: int  # counted complaints in the window (policy: card holders, once each, not dismissed)
    # What the defences of SPEC §3 judge by (risk/README.md).
    complaints_filed: int = 0  # every complaint filed in the window, counted or not; reported, not judged
    refund_consumers: int = 0  # distinct consumers who had a card refunded in the window
    rejection_consumers: int = 0  # distinct consumers who rejected an ask in the window

    def to_dict(self) -> dict[str, int]:
        # Every field is an int, so no deep copy (dataclasses.asdict's) is needed; this runs on
        # every re-assessment in the write path.
        return {name: getattr(self, name) for name in _INDICATOR_FIELDS}


_INDICATOR_FIELDS = tuple(f.name for f in fields(Indicators))


def _check(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")


def compute_indicators(
    window: MerchantCounters,
    all_time: MerchantCounters,
    last_7_days_issued: int,
    prior_8_weeks_issued: int,
    overdue_complaints: int,
    escrow_outstanding: int,
    *,
    prior_weeks: int = 8,
    complaints: int | None = None,
    refund_consumers: int = 0,
    rejection_consumers: int = 0,
) -> Indicators:
    """Compute a merchant's indicators.

    `window` is the sum of the daily counters in the rolling window, `all_time` the running
    total. `last_7_days_issued` is fen issued in the last 7 days; `prior_8_weeks_issued` is fen
    issued in the `prior_weeks` weeks before those 7 days. `prior_weeks` is normally
    `policy.surge_weeks` (8); pass fewer for a merchant onboarded less than that long before
    the last 7 days, so a young merchant's steady sales are compared with the weeks it was
    actually selling rather than with empty weeks (which would look like a surge); pass 0
    when it has no earlier week at all.

    `complaints` is the counted complaints of the window (the service applies the policy's rules of
    who counts); None counts every complaint filed (`window.complaints`). `refund_consumers` and
    `rejection_consumers` are the distinct consumers behind the window's refunds and rejections.

    Issuance surge = last_7_days_issued / (prior_8_weeks_issued / prior_weeks), in bp. With no
    issuance in the prior weeks there is no baseline to surge against and the surge is 0. A
    burst after a silent spell is still caught the week after: the burst is then the whole
    baseline, averaged over 8 weeks, and selling on at the same pace reads as 8x.
    """
    if not isinstance(window, MerchantCounters) or not isinstance(all_time, MerchantCounters):
        raise TypeError("window and all_time must be MerchantCounters")
    for name, value in (
        ("last_7_days_issued", last_7_days_issued),
        ("prior_8_weeks_issued", prior_8_weeks_issued),
        ("overdue_complaints", overdue_complaints),
        ("escrow_outstanding", escrow_outstanding),
        ("prior_weeks", prior_weeks),
        ("refund_consumers", refund_consumers),
        ("rejection_consumers", rejection_consumers),
    ):
        if type(value) is not int or value < 0:  # the common case (a plain count) costs no call
            _check(name, value)

    if complaints is None:
        complaints = window.complaints
    if type(complaints) is not int or complaints < 0:
        _check("complaints", complaints)
    # last7 / (prior / weeks) == last7 * weeks / prior; one floor at the end keeps it exact.
    surge = 0 if prior_weeks == 0 else ratio_bp(last_7_days_issued * prior_weeks, prior_8_weeks_issued)

    # The counters shown as they are, spelt out (this runs for every merchant of every write batch):
    # window_<counter> and all_time_<counter> (risk/tests/test_indicators_copied.py holds them to it).
    return Indicators(
        window_issued=window.issued,
        window_released=window.released,
        window_refunded=window.refunded,
        window_cards_sold=window.cards_sold,
        window_redemptions_asked=window.redemptions_asked,
        window_redemptions_rejected=window.redemptions_rejected,
        all_time_issued=all_time.issued,
        all_time_released=all_time.released,
        all_time_refunded=all_time.refunded,
        all_time_cards_sold=all_time.cards_sold,
        escrow_outstanding=escrow_outstanding,
        last_7_days_issued=last_7_days_issued,
        prior_weeks_issued=prior_8_weeks_issued,
        prior_weeks=prior_weeks,
        redemption_rate_bp=ratio_bp(window.released, window.issued),
        refund_rate_bp=ratio_bp(window.refunded, window.issued),
        complaint_rate_bp=ratio_bp(complaints, window.cards_sold),
        issuance_surge_bp=surge,
        rejection_rate_bp=ratio_bp(window.redemptions_rejected, window.redemptions_asked),
        overdue_complaints=overdue_complaints,
        complaints=complaints,
        complaints_filed=window.complaints,
        refund_consumers=refund_consumers,
        rejection_consumers=rejection_consumers,
    )
