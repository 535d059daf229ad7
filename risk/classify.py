"""Classification: indicators + policy -> health code (预付健康码) with its reasons.

This module owns `classify`, `Assessment` and `Reason`. Rules (spec §3):

- An indicator *crosses* a threshold when `value >= threshold` (reaching it is enough).
- The code is red if any judged indicator crosses its red threshold, else yellow if any
  crosses its yellow one, else green.
- Rate-based indicators are judged only once the merchant has sold `policy.min_cards` cards
  all time; before that the merchant is a `new_merchant` and only the count-based signals
  (complaints, overdue complaints) are judged — a thin history makes rates noise, but ten
  complaints are ten complaints.
- The refund, rejection and complaint rates are judged only once enough distinct consumers stand
  behind them (`policy.min_refund_consumers`, `min_rejection_consumers`, `min_complaint_consumers`):
  one consumer refunding ten cards, or rejecting every ask, is one voice, not a pattern (SPEC §3,
  risk/README.md).
- The redemption rate is reported but never judged: cards are prepaid for months of use, so
  a low rate is what any merchant selling well looks like; selling hard is what the issuance
  surge judges.
- Reasons list every indicator that crosses a threshold, once, at the worst level it reaches
  (a red crossing implies the yellow one), red ones first, then in the fixed order of
  `policy.THRESHOLD_NAMES`. The same inputs always give the same list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .indicators import Indicators
from .policy import CONSUMER_GATES, COUNT_THRESHOLDS, THRESHOLD_NAMES, Policy

# Policy threshold name -> the field of Indicators it judges (and the name a Reason carries,
# so a reader finds the value under the same key in the health's `indicators` object).
JUDGED_FIELD: dict[str, str] = {
    "refund_rate": "refund_rate_bp",
    "complaint_rate": "complaint_rate_bp",
    "issuance_surge": "issuance_surge_bp",
    "rejection_rate": "rejection_rate_bp",
    "overdue_complaints": "overdue_complaints",
    "complaints": "complaints",
}
assert tuple(JUDGED_FIELD) == THRESHOLD_NAMES


@dataclass(frozen=True)
class Reason:
    """One crossed threshold: `indicator` is the key in the health's `indicators` object."""

    indicator: str
    value: int
    threshold: int
    level: str  # "red" or "yellow"

    def to_dict(self) -> dict[str, Any]:
        return {
            "indicator": self.indicator,
            "value": self.value,
            "threshold": self.threshold,
            "level": self.level,
        }


@dataclass(frozen=True)
class Assessment:
    code: str  # "green", "yellow" or "red"
    reasons: list[Reason] = field(default_factory=list)
    new_merchant: bool = False
    policy_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "reasons": [r.to_dict() for r in self.reasons],
            "new_merchant": self.new_merchant,
            "policy_version": self.policy_version,
        }


_JUDGED_ALL = tuple(JUDGED_FIELD.items())  # (threshold name, indicator field), in THRESHOLD_NAMES order
_JUDGED_NEW = tuple((name, f) for name, f in _JUDGED_ALL if name in COUNT_THRESHOLDS)
# Rate threshold -> (policy gate field, Indicators field of the distinct consumers behind it).
# The complaint rate's gate compares the counted complaints: distinct consumers under the default policy.
_GATED = {
    "refund_rate": ("min_refund_consumers", "refund_consumers"),
    "rejection_rate": ("min_rejection_consumers", "rejection_consumers"),
    "complaint_rate": ("min_complaint_consumers", "complaints"),
}
assert set(_GATED) == set(CONSUMER_GATES) and all(_GATED[k][0] == v for k, v in CONSUMER_GATES.items())


def classify(ind: Indicators, policy: Policy) -> Assessment:
    """Judge one merchant's indicators under one policy version."""
    new_merchant = ind.all_time_cards_sold < policy.min_cards
    red: list[Reason] = []
    yellow: list[Reason] = []
    # Threshold.level inlined: this runs for every merchant of every write batch.
    for name, indicator in _JUDGED_NEW if new_merchant else _JUDGED_ALL:
        gate = _GATED.get(name)
        if gate is not None and getattr(ind, gate[1]) < getattr(policy, gate[0]):
            continue  # too few distinct consumers behind the rate to judge it
        threshold = getattr(policy, name)
        value = getattr(ind, indicator)
        if value >= threshold.red:
            red.append(Reason(indicator, value, threshold.red, "red"))
        elif value >= threshold.yellow:
            yellow.append(Reason(indicator, value, threshold.yellow, "yellow"))
    return Assessment(
        code="red" if red else "yellow" if yellow else "green",
        reasons=red + yellow,
        new_merchant=new_merchant,
        policy_version=policy.version,
    )
