"""Each refund cause is a named function (`service/cards/refunds.py`); a consumer's refund picks one by
`refund_rule`, and the quote pays what the refund would."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime, timedelta

import pytest

from service.cards import refunds
from service.cards.service import refund_quote

NOW = datetime(2026, 6, 1, tzinfo=UTC)
Card = namedtuple(
    "Card",
    "id status price escrow units_used units_total list_price released expires_at cooling_off_ends_at currency "
    "payment_method payment_reference",
)


def card(**changes) -> Card:
    base = Card(
        "card_1", "active", 100_000, 100_000, 0, 10, 12_000, 0, NOW + timedelta(days=300), NOW + timedelta(days=3),
        "CNY", "alipay", "ref-1",
    )  # fmt: skip
    return base._replace(**changes)


@pytest.mark.parametrize(
    "merchant_status, changes, rule",
    [
        ("active", {}, "cooling_off"),
        ("active", {"cooling_off_ends_at": NOW}, "consumer_quit"),
        ("active", {"units_used": 1, "escrow": 90_000, "released": 10_000}, "consumer_quit"),
        ("active", {"expires_at": NOW}, "expiry"),
        ("closing", {}, "merchant_closure"),
        ("closed", {"expires_at": NOW}, "merchant_closure"),
        ("defaulted", {}, "merchant_default"),
    ],
)
def test_a_consumer_s_refund_takes_the_cause_that_applies(merchant_status, changes, rule):
    c = card(**changes)
    assert refunds.refund_rule(c, merchant_status, NOW) == rule
    quote = refund_quote(c, merchant_status, NOW)
    assert quote["rule"] == rule and quote["amount"] == refunds.refund_amount(c, rule)
    assert quote["amount"] + quote["merchant_share"] == c.escrow


def test_every_cause_has_its_named_function():
    assert refunds.CAUSES == {
        "cooling_off": refunds.refund_in_cooling_off,
        "consumer_quit": refunds.refund_on_quit,
        "expiry": refunds.refund_for_expiry,
        "merchant_closure": refunds.refund_for_closure,
        "merchant_default": refunds.refund_for_merchant_default,
    }


def test_only_quitting_after_cooling_off_keeps_back_what_was_used():
    used = card(units_used=3, escrow=70_000, released=30_000)
    assert refunds.refund_amount(used, "consumer_quit") == 100_000 - 3 * 12_000
    for rule in ("cooling_off", "expiry", "merchant_closure", "merchant_default"):
        assert refunds.refund_amount(used, rule) == 70_000  # all that is left
