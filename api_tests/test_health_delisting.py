"""Only a regulator lifts a delisting: a code that improves lifts the warning, not the delisting,
whether the grace period or a regulator imposed it."""

from __future__ import annotations

from datetime import timedelta

from api_tests.factories import (
    buy_card,
    create_regulator,
    health,
    move_clock_to,
    my_merchant,
    parse_time,
    refund,
    register_consumer,
)
from api_tests.test_health_story import _salon_with_cards


async def test_improving_code_keeps_a_regulators_delisting(client):
    regulator = await create_regulator(client)
    salon, product, consumers, cards = await _salon_with_cards(client)
    for i in range(6):  # six consumers refund 3,000 bp: red, warned
        await refund(client, consumers[i], cards[i])
    assert (await health(client, salon))["code"] == "red"
    r = await client.post(f"/v1/merchants/{salon['id']}/delisting", json={"listed": True}, headers=regulator["headers"])
    assert r.status_code == 200, r.text

    # A delisted salon cannot sell, so the sale that improves the code happens while listed: the
    # regulator lifts, a card is sold, the refunds make it red again and the regulator delists again.
    r = await client.post(
        f"/v1/merchants/{salon['id']}/delisting", json={"listed": False}, headers=regulator["headers"]
    )
    assert r.status_code == 200, r.text
    late = await register_consumer(client, "Late buyer")
    await buy_card(client, late, product)  # red → yellow: the warning goes
    h = await health(client, salon)
    assert (h["code"], h["warning"], h["delisted"]) == ("yellow", None, False)
    await refund(client, consumers[6], cards[6])  # 70,000 of 210,000: back to red
    assert (await health(client, salon))["code"] == "red"
    r = await client.post(f"/v1/merchants/{salon['id']}/delisting", json={"listed": True}, headers=regulator["headers"])
    assert r.status_code == 200, r.text

    # The refunds leave the rolling window: the code improves with no one's act.
    await move_clock_to(client, parse_time(h["since"]) + timedelta(days=91))
    h = await health(client, salon)
    assert h["code"] == "green" and h["warning"] is None
    assert h["delisted"] is True, "an improving code lifted the regulator's delisting"
    assert (await my_merchant(client, salon))["status"] == "delisted"


async def test_improving_code_keeps_an_automatic_delisting_until_a_regulator_lifts_it(client):
    regulator = await create_regulator(client)
    salon, product, consumers, cards = await _salon_with_cards(client)
    for i in range(6):
        await refund(client, consumers[i], cards[i])
    h = await health(client, salon)
    assert h["code"] == "red"
    await move_clock_to(client, parse_time(h["since"]) + timedelta(days=15))  # past the 14-day grace
    assert (await health(client, salon))["delisted"] is True

    await move_clock_to(client, parse_time(h["since"]) + timedelta(days=91))  # the refunds leave the window
    h = await health(client, salon)
    assert (h["code"], h["warning"], h["delisted"]) == ("green", None, True)
    r = await client.post(
        f"/v1/merchants/{salon['id']}/delisting", json={"listed": False}, headers=regulator["headers"]
    )
    assert r.status_code == 200, r.text
    assert (await health(client, salon))["delisted"] is False
    assert (await my_merchant(client, salon))["status"] == "active"
