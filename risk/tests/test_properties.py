"""Property tests: counters form a monoid; a red-level value can never yield green."""

from hypothesis import given, settings
from hypothesis import strategies as st

from risk.classify import JUDGED_FIELD, classify
from risk.counters import COUNTER_FIELDS, MerchantCounters
from risk.indicators import compute_indicators
from risk.policy import THRESHOLD_NAMES, Policy, Threshold

from ._factories import make_indicators

amounts = st.integers(min_value=0, max_value=10**15)
counters = st.builds(MerchantCounters, **{name: amounts for name in COUNTER_FIELDS})


@given(counters, counters, counters)
def test_counter_addition_is_associative(a, b, c):
    assert (a + b) + c == a + (b + c)


@given(counters, counters)
def test_counter_addition_commutes_and_has_zero(a, b):
    assert a + b == b + a
    assert a + MerchantCounters.zero() == a == sum([a])


@st.composite
def thresholds(draw):
    yellow = draw(st.integers(min_value=1, max_value=100_000))
    red = draw(st.integers(min_value=yellow + 1, max_value=200_000))
    return Threshold(yellow, red)


policies = st.builds(
    Policy,
    version=st.integers(min_value=1, max_value=1_000),
    min_cards=st.integers(min_value=0, max_value=1_000),
    **{name: thresholds() for name in THRESHOLD_NAMES},
)
values = st.integers(min_value=0, max_value=300_000)


@settings(max_examples=300)
@given(policies, st.fixed_dictionaries({JUDGED_FIELD[n]: values for n in THRESHOLD_NAMES}),
       st.sampled_from(THRESHOLD_NAMES), st.integers(min_value=0, max_value=50_000))
def test_red_value_never_green(policy, judged, at_red, extra):
    # push one indicator to (or past) its red threshold, for a merchant past min_cards
    judged = dict(judged)
    judged[JUDGED_FIELD[at_red]] = policy.threshold(at_red).red + extra
    ind = make_indicators(all_time_cards_sold=policy.min_cards, **judged)
    a = classify(ind, policy)
    assert a.code == "red"
    assert a.reasons[0].level == "red"
    assert a.policy_version == policy.version


@settings(max_examples=300)
@given(policies, st.fixed_dictionaries({JUDGED_FIELD[n]: values for n in THRESHOLD_NAMES}),
       st.integers(min_value=0, max_value=2_000))
def test_code_matches_worst_crossing(policy, judged, cards):
    ind = make_indicators(all_time_cards_sold=cards, **judged)
    a = classify(ind, policy)
    new = cards < policy.min_cards
    judged_names = ("overdue_complaints", "complaints") if new else THRESHOLD_NAMES
    levels = {policy.threshold(n).level(judged[JUDGED_FIELD[n]]) for n in judged_names}
    expected = "red" if "red" in levels else "yellow" if "yellow" in levels else "green"
    assert a.code == expected
    assert a.new_merchant == (cards < policy.min_cards)
    assert [r.level for r in a.reasons] == sorted((r.level for r in a.reasons),
                                                  key=["red", "yellow"].index)


@given(counters, counters, st.integers(0, 10**12), st.integers(0, 10**12),
       st.integers(0, 100), st.integers(0, 10**12), st.integers(0, 8))
def test_indicators_are_ints_and_exact(window, extra, last7, prior, overdue, escrow, weeks):
    all_time = window + extra
    ind = compute_indicators(window, all_time, last7, prior, overdue, escrow, prior_weeks=weeks)
    assert all(type(v) is int for v in ind.to_dict().values())
    # floor: the bp figure never overstates the exact ratio, and is within 1 bp of it
    if window.issued:
        assert ind.refund_rate_bp * window.issued <= window.refunded * 10_000
        assert (ind.refund_rate_bp + 1) * window.issued > window.refunded * 10_000
