"""The credit rule with plain numbers: each criterion met and missed, and the policy's validation."""

from __future__ import annotations

from typing import Any

import pytest

from risk.credit import CreditPolicy, MonthFigures, rate_bp, recommend
from risk.policy import PolicyError

RATES = {"max_refund_rate_bp": 1_000, "max_complaint_rate_bp": 500}
POLICY = CreditPolicy(version=3, green_months=6, min_months_on_platform=6, min_monthly_released=100_000, **RATES)


def good_months(n: int = 6, **override) -> list[MonthFigures]:
    base: dict[str, Any] = dict(
        worst_code="green", released=100_000, issued=200_000, refunded=10_000, cards_sold=100, complaints=2
    )
    base.update(override)
    return [MonthFigures(month=f"2026-{m:02d}", **base) for m in range(1, n + 1)]


def test_a_steady_green_merchant_is_recommended_with_every_reason_met():
    r = recommend(12, good_months(), POLICY)
    assert r.recommended and r.failed == ()
    assert len(r.reasons) == 5 and all(x.startswith("met: ") for x in r.reasons)
    assert r.refund_rate_bp == 500 and r.complaint_rate_bp == 200 and r.policy_version == 3


def test_one_yellow_month_in_six_is_enough_to_refuse_and_the_reason_names_it():
    months = good_months()
    months[2] = MonthFigures("2026-03", "yellow", 100_000, 200_000, 10_000, 100, 2)
    r = recommend(12, months, POLICY)
    assert not r.recommended and r.failed == ("green_months",)
    assert "2026-03 yellow" in r.reasons[1] and "green in 5 of the last 6" in r.reasons[1]


def test_a_month_one_fen_short_of_the_volume_fails_and_exactly_enough_passes():
    months = good_months()
    months[-1] = MonthFigures("2026-06", "green", 99_999, 200_000, 10_000, 100, 2)
    assert recommend(12, months, POLICY).failed == ("monthly_released",)
    months[-1] = MonthFigures("2026-06", "green", 100_000, 200_000, 10_000, 100, 2)
    assert recommend(12, months, POLICY).recommended


def test_rates_at_the_ceiling_pass_and_one_basis_point_over_fails():
    assert recommend(12, good_months(refunded=20_000), POLICY).recommended  # 1000 bp exactly
    assert recommend(12, good_months(refunded=20_020), POLICY).failed == ("refund_rate",)  # 1001 bp
    assert recommend(12, good_months(complaints=5), POLICY).recommended  # 500 bp
    assert recommend(12, good_months(complaints=6), POLICY).failed == ("complaint_rate",)


def test_a_new_merchant_fails_on_its_short_record():
    r = recommend(3, good_months(3), POLICY)
    assert set(r.failed) == {"months_on_platform", "green_months", "monthly_released"}


def test_rates_of_nothing():
    assert rate_bp(0, 0) == 0
    assert rate_bp(3, 0) == 10_000  # complaints with no card sold are no free pass
    assert rate_bp(1, 3) == 3333


def test_the_policy_refuses_what_it_cannot_judge_exactly():
    with pytest.raises(PolicyError):
        CreditPolicy(max_refund_rate_bp=10_001)
    with pytest.raises(PolicyError):
        CreditPolicy(min_monthly_released=1.5)  # type: ignore[arg-type]
    with pytest.raises(PolicyError):
        CreditPolicy.from_dict({"green_months": 6, "surprise": 1})
    assert CreditPolicy.from_dict(POLICY.to_dict()) == POLICY
    with pytest.raises(ValueError):
        MonthFigures("2026-01", "blue")
