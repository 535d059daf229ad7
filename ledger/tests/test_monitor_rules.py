"""The monitor's money rules, from the entries alone: each breach is named by its entry."""

from __future__ import annotations

import pytest

from ledger.monitor import MoneyRules, MonitorError


def run(entries: list[dict]) -> MoneyRules:
    m = MoneyRules()
    for seq, e in enumerate(entries):
        m.apply(seq, e)
    return m


BUY = {"kind": "purchase", "card_id": "c1", "amount": 9_000, "held_delta": 0}
HOLD = {"kind": "hold", "card_id": "c1", "redemption_id": "r1", "amount": 3_000, "held_delta": 3_000}
RELEASE = {"kind": "release", "card_id": "c1", "redemption_id": "r1", "amount": 3_000, "held_delta": -3_000}


def test_an_honest_card_life_passes():
    m = run(
        [
            BUY,
            HOLD,
            RELEASE,
            {"kind": "hold", "card_id": "c1", "redemption_id": "r2", "amount": 3_000, "held_delta": 3_000},
            {"kind": "void", "card_id": "c1", "redemption_id": "r2", "amount": 3_000, "held_delta": -3_000},
            {"kind": "refund", "card_id": "c1", "amount": 5_000, "merchant_share": 1_000, "held_delta": 0},
            {"kind": "merchant_closed", "merchant_id": "m1"},
        ]
    )
    assert m.cards["c1"] == [9_000, 4_000, 5_000, 0] and m.holds == {}


@pytest.mark.parametrize(
    "entries, bad, words",
    [
        ([BUY, RELEASE], 1, "without its open hold"),
        ([BUY, HOLD, RELEASE, RELEASE], 3, "without its open hold"),
        ([BUY, {**HOLD, "card_id": "c2"}], 1, "never bought"),
        ([BUY, HOLD, {**RELEASE, "amount": 9_001}], 2, "more than the 9000 paid in"),
        (
            [BUY, {"kind": "refund", "card_id": "c1", "amount": 9_000, "merchant_share": 1, "held_delta": 0}],
            1,
            "more than the 9000 paid in",
        ),
        ([BUY, {**HOLD, "held_delta": 9_001}], 1, "below zero"),
        ([BUY, HOLD, {**RELEASE, "held_delta": -3_001}], 2, "below zero"),
        ([BUY, BUY], 1, "second purchase"),
        ([{**BUY, "held_delta": 9_001}], 0, "below zero"),  # a purchase's held_delta counts, as in ledger/totals.py
        ([BUY, {**HOLD, "amount": 1.5}], 1, "integer"),
    ],
)
def test_each_breach_names_the_first_bad_entry(entries, bad, words):
    with pytest.raises(MonitorError, match=words) as info:
        run(entries)
    assert info.value.bad_seq == bad and f"entry {bad}:" in info.value.reason
