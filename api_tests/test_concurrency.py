"""Concurrency (SPEC §2): simultaneous requests can never over-commit a card or move money twice."""

import asyncio
from collections import Counter

from api_tests.factories import (
    assert_error,
    buy_card,
    create_merchant,
    get_card,
    publish_count,
    publish_stored_value,
    register_consumer,
)


def assert_not_over_committed(balance: dict, price: int) -> None:
    assert 0 <= balance["held"] <= balance["escrow"]
    assert balance["units_held"] + balance["units_used"] <= balance["units_total"]
    assert balance["escrow"] + balance["released"] + balance["refunded"] == price


async def test_fifty_simultaneous_asks_for_the_whole_balance_hold_it_once(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000))
    url = f"/v1/cards/{card['id']}/redemptions"
    answers = await asyncio.gather(
        *[client.post(url, json={"amount": 120_000}, headers=gym["headers"]) for _ in range(50)]
    )
    assert Counter(r.status_code for r in answers) == {201: 1, 409: 49}
    for r in answers:
        if r.status_code == 409:
            assert_error(r, 409, "insufficient_balance")
    held = next(r.json() for r in answers if r.status_code == 201)
    balance = (await get_card(client, li, card))["balance"]
    assert (balance["held"], balance["units_held"], balance["available"]) == (100_000, 120_000, 0)
    assert_not_over_committed(balance, 100_000)

    confirms = await asyncio.gather(
        *[client.post(f"/v1/redemptions/{held['id']}/confirm", headers=li["headers"]) for _ in range(10)]
    )
    assert Counter(r.status_code for r in confirms) == {200: 1, 409: 9}
    balance = (await get_card(client, li, card))["balance"]
    assert (balance["released"], balance["escrow"], balance["held"]) == (100_000, 0, 0)
    assert_not_over_committed(balance, 100_000)


async def test_simultaneous_small_asks_stop_exactly_at_the_balance(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=7))
    url = f"/v1/cards/{card['id']}/redemptions"
    answers = await asyncio.gather(*[client.post(url, json={"uses": 2}, headers=gym["headers"]) for _ in range(20)])
    assert Counter(r.status_code for r in answers) == {201: 3, 409: 17}
    balance = (await get_card(client, li, card))["balance"]
    # Three holds of 2 uses: 6 of 7 uses held, floor(6 × 1000 / 7) = 857 fen.
    assert (balance["units_held"], balance["held"]) == (6, 857)
    assert_not_over_committed(balance, 1000)
    holds = [r.json() for r in answers if r.status_code == 201]
    confirmed = await asyncio.gather(
        *[client.post(f"/v1/redemptions/{h['id']}/confirm", headers=li["headers"]) for h in holds]
    )
    assert [r.status_code for r in confirmed] == [200, 200, 200]
    assert sum(r.json()["release_amount"] for r in confirmed) == 857
    balance = (await get_card(client, li, card))["balance"]
    assert (balance["released"], balance["escrow"], balance["units_left"]) == (857, 143, 1)


async def test_a_refund_racing_confirms_and_asks_leaves_the_card_whole(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=10_000, face_value=10_000))
    url = f"/v1/cards/{card['id']}/redemptions"
    holds = [(await client.post(url, json={"amount": 1000}, headers=gym["headers"])).json() for _ in range(5)]
    racers = [client.post(f"/v1/redemptions/{h['id']}/confirm", headers=li["headers"]) for h in holds]
    racers += [client.post(f"/v1/cards/{card['id']}/refund", headers=li["headers"]) for _ in range(3)]
    racers += [client.post(url, json={"amount": 500}, headers=gym["headers"]) for _ in range(5)]
    answers = await asyncio.gather(*racers)
    assert all(r.status_code < 500 for r in answers), [r.text for r in answers]
    refunds = [r for r in answers[5:8] if r.status_code == 200]
    assert len(refunds) == 1
    final = await get_card(client, li, card)
    assert final["status"] == "refunded"
    b = final["balance"]
    confirmed = sum(r.json()["release_amount"] for r in answers[:5] if r.status_code == 200)
    assert b["refunded"] == refunds[0].json()["amount"]
    assert b["released"] == confirmed + refunds[0].json()["merchant_share"]
    assert (b["escrow"], b["held"], b["units_held"]) == (0, 0, 0)
    assert b["refunded"] + b["released"] == 10_000


async def test_simultaneous_purchases_with_one_idempotency_key_buy_one_card(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    product = await publish_count(client, gym, price=1000, uses=3)
    body = {"product_id": product["id"], "payment": {"method": "alipay", "reference": "ali-9"}}
    answers = await asyncio.gather(
        *[client.post("/v1/cards", json=body, headers={**li["headers"], "Idempotency-Key": "one"}) for _ in range(20)]
    )
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["id"] for r in answers}) == 1
    cards = (await client.get("/v1/consumers/me/cards", headers=li["headers"])).json()["items"]
    assert len(cards) == 1
