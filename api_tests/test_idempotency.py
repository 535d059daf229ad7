"""Idempotency keys (SPEC §5): the same key and body answer the first answer and do nothing again;
the same key with another body is a conflict; keys belong to their caller."""

from api_tests.factories import (
    assert_error,
    buy_card,
    create_merchant,
    get_card,
    publish_stored_value,
    redeem,
    register_consumer,
)


def keyed(party: dict, key: str) -> dict:
    return {**party["headers"], "Idempotency-Key": key}


async def my_cards(client, consumer) -> list[dict]:
    return (await client.get("/v1/consumers/me/cards", headers=consumer["headers"])).json()["items"]


async def test_buying_twice_with_one_key_buys_one_card(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    product = await publish_stored_value(client, gym, price=50_000, face_value=60_000)
    body = {"product_id": product["id"], "payment": {"method": "alipay", "reference": "ali-77"}}
    first = await client.post("/v1/cards", json=body, headers=keyed(li, "buy-1"))
    again = await client.post("/v1/cards", json=body, headers=keyed(li, "buy-1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first.headers
    cards = await my_cards(client, li)
    assert [c["id"] for c in cards] == [first.json()["id"]]
    stats = (await client.get("/v1/merchants/me/stats", headers=gym["headers"])).json()
    assert stats["issued"] == 50_000


async def test_an_ask_confirm_and_refund_replayed_move_money_once(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000))
    url = f"/v1/cards/{card['id']}/redemptions"
    asks = [await client.post(url, json={"amount": 6000}, headers=keyed(gym, "ask-1")) for _ in range(3)]
    assert {r.status_code for r in asks} == {201} and len({r.json()["id"] for r in asks}) == 1
    assert (await get_card(client, li, card))["balance"]["held"] == 5000

    confirm_url = f"/v1/redemptions/{asks[0].json()['id']}/confirm"
    confirms = [await client.post(confirm_url, headers=keyed(li, "confirm-1")) for _ in range(3)]
    assert {r.status_code for r in confirms} == {200}
    assert all(r.json() == confirms[0].json() for r in confirms)
    assert [r.headers.get("Idempotent-Replayed") for r in confirms] == [None, "true", "true"]
    b = (await get_card(client, li, card))["balance"]
    assert (b["released"], b["escrow"], b["held"], b["units_used"]) == (5000, 95_000, 0, 6000)
    # The same confirm without the key is a conflict: the first answer already happened.
    assert_error(await client.post(confirm_url, headers=li["headers"]), 409, "redemption_not_pending")

    refunds = [await client.post(f"/v1/cards/{card['id']}/refund", headers=keyed(li, "refund-1")) for _ in range(2)]
    assert [r.status_code for r in refunds] == [200, 200] and refunds[0].json() == refunds[1].json()
    # quit: 100,000 − 6,000 face used = 94,000 back; 1,000 more to the merchant.
    assert (refunds[0].json()["amount"], refunds[0].json()["merchant_share"]) == (94_000, 1000)
    b = (await get_card(client, li, card))["balance"]
    assert (b["refunded"], b["released"], b["escrow"]) == (94_000, 6000, 0)
    redemptions = (await client.get("/v1/consumers/me/redemptions", headers=li["headers"])).json()["items"]
    assert [(r["status"], r["release_amount"]) for r in redemptions] == [("confirmed", 5000)]


async def test_one_key_with_another_body_is_a_conflict_and_does_nothing(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000))
    url = f"/v1/cards/{card['id']}/redemptions"
    assert (await client.post(url, json={"amount": 6000}, headers=keyed(gym, "k"))).status_code == 201
    assert_error(await client.post(url, json={"amount": 6001}, headers=keyed(gym, "k")), 409, "idempotency_key_reused")
    assert (await get_card(client, li, card))["balance"]["units_held"] == 6000
    # The merchant's "k" is not the consumer's "k".
    other = await client.post(f"/v1/cards/{card['id']}/refund", headers=keyed(li, "k"))
    assert other.status_code == 200 and other.json()["amount"] == 100_000


async def test_keys_belong_to_their_caller(client):
    gym = await create_merchant(client)
    li, mei = await register_consumer(client), await register_consumer(client, "Han Meimei 韩梅梅")
    product = await publish_stored_value(client, gym, price=50_000, face_value=60_000)
    body = {"product_id": product["id"], "payment": {"method": "alipay", "reference": "ali-1"}}
    lis = await client.post("/v1/cards", json=body, headers=keyed(li, "same-key"))
    # The same key and body but her own payment (a reference funds one card only, SPEC §12).
    theirs = {**body, "payment": {"method": "alipay", "reference": "ali-2"}}
    meis = await client.post("/v1/cards", json=theirs, headers=keyed(mei, "same-key"))
    assert lis.status_code == meis.status_code == 201
    assert lis.json()["id"] != meis.json()["id"]
    assert meis.json()["consumer_id"] == mei["id"] and "Idempotent-Replayed" not in meis.headers
    assert len(await my_cards(client, li)) == len(await my_cards(client, mei)) == 1


async def test_a_failed_request_does_not_burn_its_key(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000))
    url = f"/v1/cards/{card['id']}/redemptions"
    assert_error(
        await client.post(url, json={"amount": 200_000}, headers=keyed(gym, "big")), 409, "insufficient_balance"
    )
    await redeem(client, gym, li, card, amount=120_000)
    assert_error(await client.post(url, json={"amount": 200_000}, headers=keyed(gym, "big")), 409)


async def test_a_bad_idempotency_key_is_refused(client):
    li = await register_consumer(client)
    r = await client.post(
        "/v1/cards",
        json={"product_id": "prod_x", "payment": {"method": "alipay", "reference": "a"}},
        headers=keyed(li, "x" * 256),
    )
    assert_error(r, 400, "bad_idempotency_key")


async def test_concurrent_requests_with_one_key_have_one_effect(client):
    """However the writer batches them (one batch, several, some answered before a batch), ten
    concurrent asks and then ten confirms under one key each move money once."""
    import asyncio

    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000))
    url = f"/v1/cards/{card['id']}/redemptions"
    asks = await asyncio.gather(
        *(client.post(url, json={"amount": 6000}, headers=keyed(gym, "same")) for _ in range(10))
    )
    assert {r.status_code for r in asks} == {201} and len({r.text for r in asks}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") is None for r in asks) == 1
    confirm_url = f"/v1/redemptions/{asks[0].json()['id']}/confirm"
    confirms = await asyncio.gather(*(client.post(confirm_url, headers=keyed(li, "same")) for _ in range(10)))
    assert {r.status_code for r in confirms} == {200} and len({r.text for r in confirms}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") is None for r in confirms) == 1
    b = (await get_card(client, li, card))["balance"]
    assert (b["released"], b["held"], b["units_used"]) == (5000, 0, 6000)
