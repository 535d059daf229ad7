"""Per-merchant activity counters: the additive raw material of the health code.

This module owns `MerchantCounters`, the row a service keeps per merchant per day. Every
field is a plain count or an amount in fen that only ever goes up within its day, so:

- a rolling window (default 90 days) is the sum of the daily rows inside it, and
- the all-time figure is a running total (or the sum of every row).

Keeping the rows additive is what lets the service update a merchant's code on every event
without a batch job: it bumps one row, re-sums and re-classifies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

# The field order is the order of `to_dict()` and of error messages.
COUNTER_FIELDS: tuple[str, ...] = (
    "issued",
    "released",
    "refunded",
    "cards_sold",
    "redemptions_asked",
    "redemptions_rejected",
    "complaints",
)


def _check_count(name: str, value: Any) -> None:
    # bool is an int subclass and float sneaks in from JSON; neither is a count of fen.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"counter '{name}' must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"counter '{name}' must not be negative, got {value}")


@dataclass
class MerchantCounters:
    """One merchant's activity over some span of days. Money is int fen, never float."""

    issued: int = 0  # fen paid into escrow for cards sold (发卡金额)
    released: int = 0  # fen released to the merchant on confirmed redemptions (核销金额)
    refunded: int = 0  # fen returned to consumers by the original route
    cards_sold: int = 0
    redemptions_asked: int = 0  # asks the merchant made (核销请求), whatever their outcome
    redemptions_rejected: int = 0  # asks the consumer explicitly rejected
    complaints: int = 0  # complaints filed against the merchant

    def __post_init__(self) -> None:
        for name in COUNTER_FIELDS:
            value = getattr(self, name)
            if type(value) is not int or value < 0:  # the common case (a plain count) costs no call
                _check_count(name, value)

    @classmethod
    def zero(cls) -> MerchantCounters:
        return cls()

    def __add__(self, other: MerchantCounters) -> MerchantCounters:
        if not isinstance(other, MerchantCounters):
            return NotImplemented
        return MerchantCounters(**{name: getattr(self, name) + getattr(other, name) for name in COUNTER_FIELDS})

    def __radd__(self, other: Any) -> MerchantCounters:
        # Lets `sum(daily_rows)` work: sum() starts from the int 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return MerchantCounters(**self.to_dict())
        return NotImplemented

    @classmethod
    def total(cls, rows: Iterable[MerchantCounters]) -> MerchantCounters:
        """The sum of daily rows, e.g. the rows of a rolling window; zero for no rows."""
        result = cls.zero()
        for row in rows:
            result = result + row
        return result

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MerchantCounters:
        """Build from a mapping. Missing keys are 0 (a counter never bumped); unknown keys are
        an error, because a misspelt counter would otherwise be dropped silently."""
        if not isinstance(d, Mapping):
            raise ValueError(f"counters must be a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - set(COUNTER_FIELDS))
        if unknown:
            raise ValueError(f"unknown counter(s) {', '.join(map(repr, unknown))}; known: {', '.join(COUNTER_FIELDS)}")
        return cls(**{name: d.get(name, 0) for name in COUNTER_FIELDS})


# Guard against a field being added to the dataclass but not to COUNTER_FIELDS.
assert tuple(f.name for f in fields(MerchantCounters)) == COUNTER_FIELDS
