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


gates = st.integers(min_value=1, max_value=50)
policies = st.builds(
    Policy,
    version=st.integers(min_value=1, max_value=1_000),
    min_cards=st.integers(min_value=0, max_value=1_000),
    min_refund_consumers=gates,
    min_rejection_consumers=gates,
    min_complaint_consumers=gates,
    **{name: thresholds() for name in THRESHOLD_NAMES},
)
people = st.integers(min_value=0, max_value=60)
values = st.integers(min_value=0, max_value=300_000)


@settings(max_examples=300)
@given(
    policies,
    st.fixed_dictionaries({JUDGED_FIELD[n]: values for n in THRESHOLD_NAMES}),
    st.sampled_from(THRESHOLD_NAMES),
    st.integers(min_value=0, max_value=50_000),
)
def test_red_value_never_green(policy, judged, at_red, extra):
    # push one indicator to (or past) its red threshold, for a merchant past min_cards, with enough
    # distinct consumers behind every rate to judge it
    judged = dict(judged)
    judged[JUDGED_FIELD[at_red]] = policy.threshold(at_red).red + extra
    if at_red == "complaint_rate":
        judged["complaints"] = max(judged["complaints"], policy.min_complaint_consumers)
    ind = make_indicators(
        all_time_cards_sold=policy.min_cards,
        refund_consumers=policy.min_refund_consumers,
        rejection_consumers=policy.min_rejection_consumers,
        **judged,
    )
    a = classify(ind, policy)
    assert a.code == "red"
    assert a.reasons[0].level == "red"
    assert a.policy_version == policy.version


@settings(max_examples=300)
@given(
    policies,
    st.fixed_dictionaries({JUDGED_FIELD[n]: values for n in THRESHOLD_NAMES}),
    st.integers(min_value=0, max_value=2_000),
    people,
    people,
)
def test_code_matches_worst_crossing(policy, judged, cards, refunders, rejecters):
    ind = make_indicators(
        all_time_cards_sold=cards, refund_consumers=refunders, rejection_consumers=rejecters, **judged
    )
    a = classify(ind, policy)
    new = cards < policy.min_cards
    judged_names = ("overdue_complaints", "complaints") if new else THRESHOLD_NAMES
    # A rate too few distinct consumers stand behind is not judged (SPEC §3 "No one party…").
    behind = {
        "refund_rate": (refunders, policy.min_refund_consumers),
        "rejection_rate": (rejecters, policy.min_rejection_consumers),
        "complaint_rate": (judged["complaints"], policy.min_complaint_consumers),
    }
    judged_names = [n for n in judged_names if n not in behind or behind[n][0] >= behind[n][1]]
    levels = {policy.threshold(n).level(judged[JUDGED_FIELD[n]]) for n in judged_names}
    expected = "red" if "red" in levels else "yellow" if "yellow" in levels else "green"
    assert a.code == expected
    assert a.new_merchant == (cards < policy.min_cards)
    assert [r.level for r in a.reasons] == sorted((r.level for r in a.reasons), key=["red", "yellow"].index)


@given(
    counters,
    counters,
    st.integers(0, 10**12),
    st.integers(0, 10**12),
    st.integers(0, 100),
    st.integers(0, 10**12),
    st.integers(0, 8),
)
def test_indicators_are_ints_and_exact(window, extra, last7, prior, overdue, escrow, weeks):
    all_time = window + extra
    ind = compute_indicators(window, all_time, last7, prior, overdue, escrow, prior_weeks=weeks)
    assert all(type(v) is int for v in ind.to_dict().values())
    # floor: the bp figure never overstates the exact ratio, and is within 1 bp of it
    if window.issued:
        assert ind.refund_rate_bp * window.issued <= window.refunded * 10_000
        assert (ind.refund_rate_bp + 1) * window.issued > window.refunded * 10_000


@settings(max_examples=300)
@given(policies, st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=10**6))
def test_one_consumer_alone_never_turns_a_merchant_red_through_a_rate(policy, refunded, asks):
    """Whatever it refunds or rejects, one consumer (below every gate of at least 2) moves no rate."""
    if min(policy.min_refund_consumers, policy.min_rejection_consumers) < 2:
        policy = Policy.from_dict({"min_refund_consumers": 2, "min_rejection_consumers": 2}, base=policy)
    issued = max(refunded, 1)
    w = MerchantCounters(
        issued=issued,
        refunded=refunded,
        cards_sold=policy.min_cards + 10,
        redemptions_asked=asks,
        redemptions_rejected=asks,
    )
    ind = compute_indicators(w, w, 0, 0, 0, 0, prior_weeks=0, complaints=0, refund_consumers=1, rejection_consumers=1)
    assert classify(ind, policy).code == "green"
