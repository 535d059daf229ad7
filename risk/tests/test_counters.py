import pytest

from risk.counters import COUNTER_FIELDS, MerchantCounters


def test_zero_is_all_zero():
    assert MerchantCounters.zero().to_dict() == {name: 0 for name in COUNTER_FIELDS}


def test_add_is_fieldwise():
    a = MerchantCounters(
        issued=100, released=20, refunded=5, cards_sold=1, redemptions_asked=3, redemptions_rejected=1, complaints=2
    )
    b = MerchantCounters(
        issued=1, released=2, refunded=3, cards_sold=4, redemptions_asked=5, redemptions_rejected=6, complaints=7
    )
    assert (a + b).to_dict() == {
        "issued": 101,
        "released": 22,
        "refunded": 8,
        "cards_sold": 5,
        "redemptions_asked": 8,
        "redemptions_rejected": 7,
        "complaints": 9,
    }
    # operands are untouched
    assert a.issued == 100 and b.issued == 1


def test_window_is_sum_of_daily_rows():
    days = [MerchantCounters(issued=100 * d, cards_sold=d) for d in range(1, 91)]
    window = sum(days)
    assert window == MerchantCounters.total(days)
    assert window.issued == 100 * 90 * 91 // 2
    assert window.cards_sold == 90 * 91 // 2
    assert MerchantCounters.total([]) == MerchantCounters.zero()


def test_add_rejects_other_types():
    with pytest.raises(TypeError):
        MerchantCounters() + 1
    with pytest.raises(TypeError):
        MerchantCounters() + {"issued": 1}


def test_dict_round_trip():
    c = MerchantCounters(
        issued=12_345, released=1, refunded=2, cards_sold=3, redemptions_asked=4, redemptions_rejected=5, complaints=6
    )
    assert MerchantCounters.from_dict(c.to_dict()) == c
    assert all(type(v) is int for v in c.to_dict().values())


def test_from_dict_missing_keys_are_zero():
    assert MerchantCounters.from_dict({"issued": 5}) == MerchantCounters(issued=5)


@pytest.mark.parametrize(
    "bad",
    [
        {"isued": 5},  # misspelt counter must not vanish silently
        {"issued": 1.5},  # no float money
        {"issued": 100.0},
        {"issued": "100"},
        {"issued": True},
        {"cards_sold": -1},
    ],
)
def test_from_dict_rejects(bad):
    with pytest.raises(ValueError):
        MerchantCounters.from_dict(bad)


def test_constructor_rejects_float_money():
    with pytest.raises(ValueError, match="issued"):
        MerchantCounters(issued=0.1)
