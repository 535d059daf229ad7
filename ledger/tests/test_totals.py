"""What each entry kind does to the totals (`ledger.totals`): the one table the writer's running sums
and the verify walk both follow."""

from __future__ import annotations

from ledger.totals import add_entry, as_dict, new_totals


def totals_of(*entries: dict) -> dict[str, int]:
    t = new_totals()
    for e in entries:
        add_entry(t, e["kind"], e)
    return as_dict(t)


def test_each_kind_moves_its_own_total():
    assert totals_of({"kind": "purchase", "amount": 100_000, "held_delta": 0}) == {
        "paid_in": 100_000,
        "released": 0,
        "refunded": 0,
        "held": 0,
        "escrow": 100_000,
    }
    assert totals_of({"kind": "hold", "amount": 20_000, "held_delta": 20_000})["held"] == 20_000
    assert totals_of({"kind": "void", "amount": 20_000, "held_delta": -20_000})["held"] == -20_000
    release = totals_of({"kind": "release", "amount": 20_000, "held_delta": -20_000})
    assert (release["released"], release["held"], release["escrow"]) == (20_000, -20_000, -20_000)
    refund = totals_of({"kind": "refund", "amount": 70_000, "merchant_share": 10_000, "held_delta": 0})
    assert (refund["refunded"], refund["released"], refund["escrow"]) == (70_000, 10_000, -80_000)


def test_a_card_s_life_adds_up_to_its_price():
    life = totals_of(
        {"kind": "purchase", "amount": 100_000, "held_delta": 0},
        {"kind": "hold", "amount": 20_000, "held_delta": 20_000},
        {"kind": "release", "amount": 20_000, "held_delta": -20_000},
        {"kind": "hold", "amount": 10_000, "held_delta": 10_000},
        {"kind": "void", "amount": 10_000, "held_delta": -10_000},
        {"kind": "refund", "amount": 72_000, "merchant_share": 8_000, "held_delta": 0},
    )
    assert life == {"paid_in": 100_000, "released": 28_000, "refunded": 72_000, "held": 0, "escrow": 0}


def test_entries_that_move_no_money_leave_the_totals_alone():
    t = new_totals()
    for kind in ("merchant_onboarded", "merchant_closing", "merchant_default", "abnormal_list_set", None):
        add_entry(t, kind, {"kind": kind, "merchant_id": "mch_1", "amount": 5})
    assert t == [0, 0, 0, 0]
    # Only a purchase, a release and a refund read `amount`; a hold or void changes only what is held.
    add_entry(t, "hold", {"amount": 7, "held_delta": 7})
    assert t == [0, 0, 0, 7]
