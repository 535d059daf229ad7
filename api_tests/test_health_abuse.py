"""No one party moves a merchant's health code by itself (SPEC §3; issue 12 findings 1 and 2).

Each test is an attack that worked on main (e0afbc6): one consumer, alone, made an honest merchant
yellow or red (and 15 days later delisted). Now a complaint counts only from a consumer who holds or
held a card of the merchant, once per consumer, and not once a regulator dismissed it; refunds and
rejections are judged only once enough distinct consumers made them (risk/README.md)."""

from __future__ import annotations

from datetime import timedelta

from api_tests.factories import (
    answer,
    ask,
    assert_error,
    buy_card,
    create_merchant,
    create_regulator,
    file_complaint,
    health,
    move_clock_to,
    my_merchant,
    parse_time,
    publish_stored_value,
    refund,
    register_consumer,
)

PRICE = 10_000


async def _shop_with_customers(client, n: int = 10):
    shop = await create_merchant(client, "Honest Gym 老实健身", "fitness")
    product = await publish_stored_value(client, shop, price=PRICE, face_value=PRICE)
    customers = [await register_consumer(client, f"Customer {i}") for i in range(n)]
    cards = [await buy_card(client, c, product) for c in customers]
    return shop, product, customers, cards


async def test_twenty_complaints_from_one_consumer_with_no_card_leave_the_merchant_green(client):
    shop, product, customers, _ = await _shop_with_customers(client)
    troll = await register_consumer(client, "Competitor 对手")
    filed = [await file_complaint(client, troll, shop, text=f"terrible {i}") for i in range(20)]
    assert all(c["status"] == "open" for c in filed)  # filing is never refused
    h = await health(client, shop)
    assert (h["code"], h["reasons"]) == ("green", []), h
    assert h["indicators"]["complaints"] == 0 and h["indicators"]["complaints_filed"] == 20

    # Left unanswered, the twenty become overdue; 15 days later the merchant is still green and listed.
    await move_clock_to(client, parse_time(filed[-1]["created_at"]) + timedelta(days=15))
    h = await health(client, shop)
    assert (h["code"], h["delisted"], h["indicators"]["overdue_complaints"]) == ("green", False, 0), h
    assert (await my_merchant(client, shop))["status"] == "active"
    await buy_card(client, customers[0], product)  # its real customers can still buy


async def test_one_card_holder_complaining_many_times_counts_once(client):
    shop, _, customers, cards = await _shop_with_customers(client)
    for i in range(20):
        await file_complaint(client, customers[0], shop, card=cards[0] if i % 2 else None, text=f"again {i}")
    h = await health(client, shop)
    assert h["indicators"]["complaints"] == 1 and h["code"] == "green", h


async def test_complaints_answered_and_then_dismissed_by_a_regulator_stop_counting(client):
    regulator = await create_regulator(client)
    shop, _, customers, cards = await _shop_with_customers(client)
    complaints = [await file_complaint(client, c, shop, card=card) for c, card in zip(customers[:5], cards[:5])]
    h = await health(client, shop)
    assert h["code"] == "red" and h["indicators"]["complaints"] == 5, h  # half its customers: complaint_rate red
    for c in complaints:
        r = await client.post(
            f"/v1/complaints/{c['id']}/response", json={"text": "We were open; see CCTV."}, headers=shop["headers"]
        )
        assert r.status_code == 200, r.text
    for c in complaints:
        r = await client.post(
            f"/v1/complaints/{c['id']}/resolution",
            json={"resolution": "dismissed", "note": "unfounded"},
            headers=regulator["headers"],
        )
        assert r.status_code == 200, r.text
    h = await health(client, shop)
    assert (h["code"], h["indicators"]["complaints"], h["indicators"]["complaints_filed"]) == ("green", 0, 5), h


async def test_one_consumer_buying_ten_cards_and_refunding_them_in_cooling_off_does_not_make_the_merchant_red(client):
    shop = await create_merchant(client, "Honest Salon 老实美发", "beauty")
    product = await publish_stored_value(client, shop, price=PRICE, face_value=PRICE)
    gamer = await register_consumer(client, "Gamer 刷子")
    cards = [await buy_card(client, gamer, product) for _ in range(10)]
    for card in cards:
        await refund(client, gamer, card)
    h = await health(client, shop)
    assert h["indicators"]["refund_rate_bp"] == 10_000 and h["indicators"]["refund_consumers"] == 1
    assert (h["code"], h["reasons"], h["new_merchant"]) == ("green", [], False), h


async def test_one_consumer_rejecting_many_asks_does_not_make_the_merchant_red(client):
    shop = await create_merchant(client, "Honest Spa 老实水疗", "beauty")
    product = await publish_stored_value(client, shop, price=PRICE, face_value=PRICE)
    others = [await register_consumer(client, f"Customer {i}") for i in range(9)]
    for c in others:
        await buy_card(client, c, product)
    grudge = await register_consumer(client, "Grudge 记仇")
    card = await buy_card(client, grudge, product)
    for _ in range(12):
        await answer(client, grudge, await ask(client, shop, card, amount=100), "reject")
    h = await health(client, shop)
    assert h["indicators"]["rejection_rate_bp"] == 10_000 and h["indicators"]["rejection_consumers"] == 1
    assert (h["code"], h["reasons"]) == ("green", []), h


async def test_many_distinct_customers_still_move_the_code(client):
    """The defences do not blind the code: five customers refunding, or rejecting, are judged."""
    shop, _, customers, cards = await _shop_with_customers(client, 20)
    for c, card in zip(customers[:4], cards[:4]):
        await refund(client, c, card)
    h = await health(client, shop)
    assert (h["code"], h["indicators"]["refund_rate_bp"], h["indicators"]["refund_consumers"]) == ("green", 2_000, 4)
    await refund(client, customers[4], cards[4])
    h = await health(client, shop)
    assert h["reasons"] == [{"indicator": "refund_rate_bp", "value": 2_500, "threshold": 1_500, "level": "yellow"}], h
    for c, card in zip(customers[5:10], cards[5:10]):
        await answer(client, c, await ask(client, shop, card, amount=100), "reject")
    h = await health(client, shop)
    assert h["code"] == "red" and h["indicators"]["rejection_consumers"] == 5, h
    assert {r["indicator"] for r in h["reasons"]} == {"refund_rate_bp", "rejection_rate_bp"}
    assert_error(await client.get("/v1/merchants/nope/health"), 404)
