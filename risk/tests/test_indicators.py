import pytest

from risk.counters import MerchantCounters
from risk.indicators import compute_indicators, ratio_bp


def compute(window=None, all_time=None, last7=0, prior=0, overdue=0, escrow=0, **kw):
    window = window or MerchantCounters()
    all_time = all_time or window
    return compute_indicators(window, all_time, last7, prior, overdue, escrow, **kw)


def test_ratio_bp_floors_and_handles_zero():
    assert ratio_bp(1, 3) == 3333  # 33.33..% rounds down
    assert ratio_bp(2, 3) == 6666  # not 6667: always down
    assert ratio_bp(0, 0) == 0
    assert ratio_bp(5, 0) == 0
    assert ratio_bp(3, 2) == 15_000  # ratios may exceed 100%


def test_money_figures_are_carried_through():
    money = {"issued": 100_000, "released": 30_000, "refunded": 10_000}
    window = MerchantCounters(**money, cards_sold=10, redemptions_asked=7, redemptions_rejected=2, complaints=1)
    all_time = window + MerchantCounters(issued=900_000, released=600_000, refunded=50_000, cards_sold=90)
    ind = compute(window, all_time, last7=20_000, prior=80_000, overdue=1, escrow=340_000)
    assert {k: getattr(ind, "window_" + k) for k in money} == money
    assert (ind.window_cards_sold, ind.window_redemptions_asked, ind.window_redemptions_rejected) == (10, 7, 2)
    assert (ind.all_time_issued, ind.all_time_released, ind.all_time_refunded) == (1_000_000, 630_000, 60_000)
    assert ind.all_time_cards_sold == 100
    assert ind.escrow_outstanding == 340_000
    assert ind.last_7_days_issued == 20_000
    assert ind.prior_weeks_issued == 80_000
    assert ind.prior_weeks == 8
    assert ind.overdue_complaints == 1
    assert ind.complaints == 1


def test_redemption_rate():
    ind = compute(MerchantCounters(issued=300_000, released=100_000))
    assert ind.redemption_rate_bp == 3333


def test_refund_rate():
    assert compute(MerchantCounters(issued=200_000, refunded=50_000)).refund_rate_bp == 2_500
    # refunds of cards sold before the window may exceed the window's issuance
    assert compute(MerchantCounters(issued=10_000, refunded=25_000)).refund_rate_bp == 25_000


def test_complaint_rate_is_bp_of_cards_sold():
    # 3 complaints over 40 cards = 7.5 complaints per 100 cards = 750 bp
    assert compute(MerchantCounters(cards_sold=40, complaints=3)).complaint_rate_bp == 750
    # 1 complaint per 100 cards = 100 bp
    assert compute(MerchantCounters(cards_sold=100, complaints=1)).complaint_rate_bp == 100


def test_rejection_rate():
    ind = compute(MerchantCounters(redemptions_asked=8, redemptions_rejected=3))
    assert ind.rejection_rate_bp == 3_750


def test_issuance_surge_against_weekly_average():
    # prior 8 weeks: 80,000 fen = 10,000 a week; last 7 days 30,000 = 3x
    assert compute(last7=30_000, prior=80_000).issuance_surge_bp == 30_000
    # same pace as before = 10000 bp
    assert compute(last7=10_000, prior=80_000).issuance_surge_bp == 10_000
    # one floor at the end: 1 / (3/8) = 2.666..x
    assert compute(last7=1, prior=3).issuance_surge_bp == 26_666


def test_issuance_surge_young_merchant_uses_its_own_weeks():
    # onboarded 2 weeks before the last 7 days, sold 20,000 in them: 10,000 a week
    assert compute(last7=10_000, prior=20_000, prior_weeks=2).issuance_surge_bp == 10_000
    # averaging over 8 weeks would have called steady sales a 4x surge
    assert compute(last7=10_000, prior=20_000).issuance_surge_bp == 40_000


def test_issuance_surge_without_baseline_is_zero():
    assert compute(last7=500_000, prior=0).issuance_surge_bp == 0
    assert compute(last7=500_000, prior=1_000, prior_weeks=0).issuance_surge_bp == 0
    assert compute(last7=0, prior=80_000).issuance_surge_bp == 0


def test_nothing_to_divide_gives_zero_rates():
    ind = compute(MerchantCounters(refunded=5_000, released=1_000, complaints=2))
    assert ind.redemption_rate_bp == 0
    assert ind.refund_rate_bp == 0
    assert ind.complaint_rate_bp == 0
    assert ind.rejection_rate_bp == 0
    assert ind.complaints == 2  # the count still shows


def test_to_dict_is_ints_only_and_names_units():
    d = compute(MerchantCounters(issued=3, released=1, cards_sold=1), escrow=2).to_dict()
    assert all(type(v) is int for v in d.values())
    for name in ("redemption_rate_bp", "refund_rate_bp", "complaint_rate_bp", "issuance_surge_bp", "rejection_rate_bp"):
        assert name in d


@pytest.mark.parametrize(
    "kwargs",
    [
        {"last7": -1},
        {"prior": -1},
        {"overdue": -1},
        {"escrow": -1},
        {"escrow": 1.0},
        {"last7": True},
        {"prior_weeks": -1},
    ],
)
def test_rejects_bad_numbers(kwargs):
    with pytest.raises(ValueError):
        compute(**kwargs)


def test_rejects_non_counters():
    with pytest.raises(TypeError):
        compute_indicators({}, MerchantCounters(), 0, 0, 0, 0)
