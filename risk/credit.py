"""Credit recommendation (信用推介): the versioned rule that turns a merchant's record into a recommendation.

This module owns `CreditPolicy` (the numbers, with a version, like the health-code thresholds in
`risk.policy`), `MonthFigures` (one calendar month of a merchant's record) and `recommend`, a pure
function: plain integers in, a recommendation with its reasons out. Rates are basis points
(1% = 100 bp) and amounts integer fen, so every comparison is exact.

A merchant is recommended when it has been on the platform long enough, its health code was green
in each of the last `green_months` whole months, it released at least `min_monthly_released` fen in
each of them (real, confirmed consumption, not sales), and over those months its refund rate and
complaint rate stay below the policy's ceilings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from risk.policy import BP_WHOLE, CODES, PolicyError, _check_int


@dataclass(frozen=True)
class CreditPolicy:
    version: int = 1
    green_months: int = 6
    min_months_on_platform: int = 6
    min_monthly_released: int = 1_000_000  # fen: 10,000 yuan of confirmed consumption a month
    max_refund_rate_bp: int = 1_000  # refunded over issued, across the judged months
    max_complaint_rate_bp: int = 500  # complaints per card sold, across the judged months

    def __post_init__(self) -> None:
        _check_int("version", self.version, 1)
        _check_int("green_months", self.green_months, 1, 60)
        _check_int("min_months_on_platform", self.min_months_on_platform, 0, 600)
        _check_int("min_monthly_released", self.min_monthly_released, 0, 10**13)
        _check_int("max_refund_rate_bp", self.max_refund_rate_bp, 0, BP_WHOLE)
        _check_int("max_complaint_rate_bp", self.max_complaint_rate_bp, 0, BP_WHOLE)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> CreditPolicy:
        known = {f.name for f in fields(cls)}
        unknown = set(body) - known
        if unknown:
            raise PolicyError(f"unknown credit policy fields: {sorted(unknown)}")
        return cls(**body)


DEFAULT_CREDIT_POLICY = CreditPolicy()


@dataclass(frozen=True)
class MonthFigures:
    """One calendar month: the worst health code held in it, and what moved."""

    month: str  # YYYY-MM
    worst_code: str
    released: int = 0
    issued: int = 0
    refunded: int = 0
    cards_sold: int = 0
    complaints: int = 0

    def __post_init__(self) -> None:
        if self.worst_code not in CODES:
            raise ValueError(f"worst_code must be one of {CODES}, got {self.worst_code!r}")
        for name in ("released", "issued", "refunded", "cards_sold", "complaints"):
            _check_int(name, getattr(self, name), 0)


@dataclass(frozen=True)
class Recommendation:
    recommended: bool
    reasons: tuple[str, ...]  # every criterion, met or not, in the policy's order
    failed: tuple[str, ...]  # the names of the criteria not met
    refund_rate_bp: int
    complaint_rate_bp: int
    policy_version: int


def rate_bp(part: int, whole: int) -> int:
    """part / whole in basis points, rounded down. Nothing over nothing is 0; something over nothing
    (complaints with no card sold) is the whole, not a free pass."""
    if whole <= 0:
        return BP_WHOLE if part > 0 else 0
    return part * BP_WHOLE // whole


def recommend(
    months_on_platform: int, last_months: Sequence[MonthFigures], policy: CreditPolicy = DEFAULT_CREDIT_POLICY
) -> Recommendation:
    """Judge the last `policy.green_months` whole months (`last_months`, oldest first; fewer if the
    merchant is newer: the missing months count as not green and nothing released)."""
    judged = list(last_months)[-policy.green_months :]
    n = policy.green_months
    reasons: list[str] = []
    failed: list[str] = []

    def criterion(name: str, ok: bool, text: str) -> None:
        reasons.append(("met: " if ok else "not met: ") + text)
        if not ok:
            failed.append(name)

    criterion(
        "months_on_platform",
        months_on_platform >= policy.min_months_on_platform,
        f"{months_on_platform} whole months on the platform (at least {policy.min_months_on_platform})",
    )
    green = sum(1 for m in judged if m.worst_code == "green")
    not_green = [f"{m.month} {m.worst_code}" for m in judged if m.worst_code != "green"]
    criterion(
        "green_months",
        green == n and len(judged) == n,
        f"green in {green} of the last {n} months" + (f" ({', '.join(not_green)})" if not_green else ""),
    )
    low = [m.month for m in judged if m.released < policy.min_monthly_released]
    enough = len(judged) == n and not low
    criterion(
        "monthly_released",
        enough,
        f"at least {policy.min_monthly_released} fen released in each of the last {n} months"
        + (f" (short in {', '.join(low)})" if low else "")
        + ("" if len(judged) == n else f" (only {len(judged)} months of record)"),
    )
    issued = sum(m.issued for m in judged)
    refund_rate = rate_bp(sum(m.refunded for m in judged), issued)
    criterion(
        "refund_rate",
        refund_rate <= policy.max_refund_rate_bp,
        f"refund rate {refund_rate} bp over those months (at most {policy.max_refund_rate_bp} bp)",
    )
    complaint_rate = rate_bp(sum(m.complaints for m in judged), sum(m.cards_sold for m in judged))
    criterion(
        "complaint_rate",
        complaint_rate <= policy.max_complaint_rate_bp,
        f"complaint rate {complaint_rate} bp of cards sold (at most {policy.max_complaint_rate_bp} bp)",
    )
    return Recommendation(
        recommended=not failed,
        reasons=tuple(reasons),
        failed=tuple(failed),
        refund_rate_bp=refund_rate,
        complaint_rate_bp=complaint_rate,
        policy_version=policy.version,
    )
