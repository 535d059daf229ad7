import dataclasses

import pytest

from risk.classify import JUDGED_FIELD, Reason, classify
from risk.counters import MerchantCounters
from risk.indicators import compute_indicators
from risk.policy import COUNT_THRESHOLDS, DEFAULT_POLICY, RATE_THRESHOLDS, THRESHOLD_NAMES, Policy

from ._factories import make_indicators


def test_quiet_merchant_is_green():
    a = classify(make_indicators(), DEFAULT_POLICY)
    assert (a.code, a.reasons, a.new_merchant, a.policy_version) == ("green", [], False, 1)


def _edges(name):
    t = DEFAULT_POLICY.threshold(name)
    cases = [
        (t.yellow - 1, "green", None),
        (t.yellow, "yellow", t.yellow),
        (t.red - 1, "yellow", t.yellow),
        (t.red, "red", t.red),
        (t.red + 1, "red", t.red),
    ]
    if t.yellow + 1 < t.red:
        cases.append((t.yellow + 1, "yellow", t.yellow))
    return [(name, value, code, limit) for value, code, limit in cases]


@pytest.mark.parametrize(
    "name, value, code, limit",
    [case for name in THRESHOLD_NAMES for case in _edges(name)],
)
def test_threshold_edges(name, value, code, limit):
    field = JUDGED_FIELD[name]
    # The complaint rate is judged once enough complaints count: four, below the count's own yellow line.
    policy = dataclasses.replace(DEFAULT_POLICY, min_complaint_consumers=4)
    extra = {"complaints": 4} if name == "complaint_rate" else {}
    a = classify(make_indicators(**{field: value}, **extra), policy)
    assert a.code == code
    if limit is None:
        assert a.reasons == []
    else:
        assert a.reasons == [Reason(field, value, limit, code)]


def test_edges_through_arithmetic():
    # refunded exactly 30% of issued: at red
    def refund_code(refunded, issued):
        w = MerchantCounters(issued=issued, refunded=refunded, cards_sold=50)
        return classify(compute_indicators(w, w, 0, 0, 0, 0, refund_consumers=50), DEFAULT_POLICY).code

    assert refund_code(3_000, 10_000) == "red"
    # 3000/10001 = 29.997%: rounds down to 2999 bp and stays yellow, as the exact ratio does
    assert refund_code(3_000, 10_001) == "yellow"
    assert refund_code(1_500, 10_000) == "yellow"
    assert refund_code(1_499, 10_000) == "green"


def test_reasons_red_first_then_fixed_order():
    ind = make_indicators(
        complaints=6,  # yellow
        refund_rate_bp=3_000,  # red
        overdue_complaints=5,  # red
        rejection_rate_bp=1_000,  # yellow
        issuance_surge_bp=60_000,  # red
    )
    a = classify(ind, DEFAULT_POLICY)
    assert a.code == "red"
    assert [(r.indicator, r.level) for r in a.reasons] == [
        ("refund_rate_bp", "red"),
        ("issuance_surge_bp", "red"),
        ("overdue_complaints", "red"),
        ("rejection_rate_bp", "yellow"),
        ("complaints", "yellow"),
    ]
    assert classify(ind, DEFAULT_POLICY) == a  # deterministic


def test_redemption_rate_is_not_judged():
    assert classify(make_indicators(redemption_rate_bp=0), DEFAULT_POLICY).code == "green"


def test_new_merchant_rates_not_judged():
    rates = {"refund_rate_bp": 10_000, "complaint_rate_bp": 5_000, "issuance_surge_bp": 90_000}
    ind = make_indicators(all_time_cards_sold=9, rejection_rate_bp=10_000, **rates)
    a = classify(ind, DEFAULT_POLICY)
    assert (a.code, a.reasons, a.new_merchant) == ("green", [], True)


def test_new_merchant_ends_at_min_cards_all_time():
    ind = make_indicators(all_time_cards_sold=10, window_cards_sold=0, refund_rate_bp=3_000)
    a = classify(ind, DEFAULT_POLICY)
    assert (a.code, a.new_merchant) == ("red", False)


@pytest.mark.parametrize(
    "field, value, code",
    [
        ("complaints", 5, "yellow"),
        ("complaints", 20, "red"),
        ("overdue_complaints", 1, "yellow"),
        ("overdue_complaints", 3, "red"),
    ],
)
def test_new_merchant_count_signals_still_judged(field, value, code):
    ind = make_indicators(all_time_cards_sold=2, refund_rate_bp=10_000, **{field: value})
    a = classify(ind, DEFAULT_POLICY)
    assert (a.code, a.new_merchant) == (code, True)
    assert [r.indicator for r in a.reasons] == [field]  # the refund rate is not a reason


def test_min_cards_zero_judges_everyone():
    p = Policy(version=2, min_cards=0)
    a = classify(make_indicators(all_time_cards_sold=0, refund_rate_bp=3_000), p)
    assert (a.code, a.new_merchant) == ("red", False)


def test_policy_version_carried_and_thresholds_used():
    p = Policy.from_dict({"version": 7, "refund_rate": {"yellow": 100, "red": 200}})
    a = classify(make_indicators(refund_rate_bp=150), p)
    assert (a.code, a.policy_version) == ("yellow", 7)
    assert a.reasons == [Reason("refund_rate_bp", 150, 100, "yellow")]


def test_assessment_to_dict():
    a = classify(make_indicators(complaints=25), DEFAULT_POLICY)
    assert a.to_dict() == {
        "code": "red",
        "reasons": [{"indicator": "complaints", "value": 25, "threshold": 20, "level": "red"}],
        "new_merchant": False,
        "policy_version": 1,
    }


def test_rate_and_count_split_covers_every_threshold():
    assert set(RATE_THRESHOLDS) | set(COUNT_THRESHOLDS) == set(THRESHOLD_NAMES)
    assert set(COUNT_THRESHOLDS) == {"complaints", "overdue_complaints"}


@pytest.mark.parametrize(
    "rate, people",
    [("refund_rate", "refund_consumers"), ("rejection_rate", "rejection_consumers"), ("complaint_rate", "complaints")],
)
def test_a_rate_needs_enough_distinct_consumers_behind_it(rate, people):
    field, gate = (
        JUDGED_FIELD[rate],
        {
            "refund_rate": "min_refund_consumers",
            "rejection_rate": "min_rejection_consumers",
            "complaint_rate": "min_complaint_consumers",
        }[rate],
    )
    n = getattr(DEFAULT_POLICY, gate)
    policy = dataclasses.replace(DEFAULT_POLICY, complaints=DEFAULT_POLICY.complaints.__class__(100, 200))
    far_past_red = DEFAULT_POLICY.threshold(rate).red * 3
    few = classify(make_indicators(**{field: far_past_red, people: n - 1}), policy)
    assert (few.code, few.reasons) == ("green", [])
    enough = classify(make_indicators(**{field: far_past_red, people: n}), policy)
    assert enough.code == "red" and [r.indicator for r in enough.reasons] == [field]
