"""The merchant's lifecycle as it touches sales (SPEC §2): the abnormal list and delisting stop new
sales until lifted; existing cards keep working; only a regulator or the operator may set them."""

import pytest

from api_tests.factories import (
    OP,
    assert_error,
    buy_card,
    create_merchant,
    create_regulator,
    get_card,
    publish_count,
    redeem,
    register_consumer,
)


async def try_buy(client, consumer, product):
    return await client.post(
        "/v1/cards",
        json={"product_id": product["id"], "payment": {"method": "unionpay", "reference": "up-1"}},
        headers=consumer["headers"],
    )


@pytest.mark.parametrize("flag", ["abnormal-list", "delisting"])
async def test_a_listed_merchant_sells_nothing_until_the_listing_is_lifted(client, flag):
    gym = await create_merchant(client)
    amr = await create_regulator(client)
    li = await register_consumer(client)
    product = await publish_count(client, gym, price=1000, uses=3)
    earlier = await buy_card(client, li, product)

    r = await client.post(
        f"/v1/merchants/{gym['id']}/{flag}", json={"listed": True, "reason": "检查"}, headers=amr["headers"]
    )
    assert r.status_code == 200, r.text
    assert_error(await try_buy(client, li, product), 409, "merchant_not_selling")
    # Cards sold before the listing keep working.
    assert (await redeem(client, gym, li, earlier, uses=1))["release_amount"] == 333

    assert_error(
        await client.post(f"/v1/merchants/{gym['id']}/{flag}", json={"listed": True}, headers=amr["headers"]), 409
    )
    r = await client.post(f"/v1/merchants/{gym['id']}/{flag}", json={"listed": False}, headers=OP)
    assert r.status_code == 200, r.text
    assert (await try_buy(client, li, product)).status_code == 201
    assert (await get_card(client, li, earlier))["balance"]["released"] == 333


async def test_a_delisted_merchant_says_so_in_its_profile(client):
    gym = await create_merchant(client)
    await client.post(f"/v1/merchants/{gym['id']}/delisting", json={"listed": True}, headers=OP)
    me = (await client.get("/v1/merchants/me", headers=gym["headers"])).json()
    assert me["status"] == "delisted" and me["delisted"] is True


@pytest.mark.parametrize(
    "path,body", [("abnormal-list", {"listed": True}), ("delisting", {"listed": True}), ("default", {"reason": "gone"})]
)
async def test_merchants_and_consumers_cannot_list_or_default_a_merchant(client, path, body):
    gym = await create_merchant(client)
    rival = await create_merchant(client, "Rival Gym")
    li = await register_consumer(client)
    for who in (rival, gym, li):
        assert_error(
            await client.post(f"/v1/merchants/{gym['id']}/{path}", json=body, headers=who["headers"]),
            403,
            "role_not_allowed",
        )
    assert (await client.get("/v1/merchants/me", headers=gym["headers"])).json()["status"] == "active"


async def test_listing_an_unknown_merchant_is_not_found(client):
    amr = await create_regulator(client)
    assert_error(
        await client.post("/v1/merchants/mch_nope/delisting", json={"listed": True}, headers=amr["headers"]),
        404,
        "merchant_not_found",
    )
    assert_error(
        await client.post("/v1/merchants/mch_nope/default", json={"reason": "x"}, headers=amr["headers"]),
        404,
        "merchant_not_found",
    )


async def test_a_defaulted_merchant_publishes_no_more_products(client):
    gym = await create_merchant(client)
    await client.post(f"/v1/merchants/{gym['id']}/default", json={"reason": "gone"}, headers=OP)
    r = await client.post(
        "/v1/products",
        json={"type": "count", "name": "x", "price": 100, "uses": 1, "valid_days": 10},
        headers=gym["headers"],
    )
    assert_error(r, 409, "merchant_not_selling")
