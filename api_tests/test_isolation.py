"""Isolation (SPEC §1): a token never reaches another party's objects (404, not 403); a role that may
not act is 403; no token or a bad one is 401."""

from api_tests.factories import (
    OP,
    ask,
    assert_error,
    buy_card,
    create_auditor,
    create_merchant,
    create_regulator,
    get_card,
    publish_stored_value,
    register_consumer,
)


async def two_of_everything(client):
    gym, rival = await create_merchant(client), await create_merchant(client, "Rival Gym 对手健身")
    li, mei = await register_consumer(client), await register_consumer(client, "Han Meimei 韩梅梅")
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=10_000, face_value=12_000))
    pending = await ask(client, gym, card, amount=1200)
    return gym, rival, li, mei, card, pending


async def test_another_consumer_cannot_see_refund_or_answer_for_my_card(client):
    gym, rival, li, mei, card, pending = await two_of_everything(client)
    assert_error(await client.get(f"/v1/cards/{card['id']}", headers=mei["headers"]), 404, "card_not_found")
    assert_error(await client.post(f"/v1/cards/{card['id']}/refund", headers=mei["headers"]), 404, "card_not_found")
    for action in ("confirm", "reject"):
        assert_error(
            await client.post(f"/v1/redemptions/{pending['id']}/{action}", headers=mei["headers"]),
            404,
            "redemption_not_found",
        )
    assert_error(await client.get(f"/v1/redemptions/{pending['id']}", headers=mei["headers"]), 404)
    assert (await client.get("/v1/consumers/me/cards", headers=mei["headers"])).json()["items"] == []
    assert (await client.get("/v1/consumers/me/redemptions", headers=mei["headers"])).json()["items"] == []
    b = (await get_card(client, li, card))["balance"]
    assert (b["held"], b["released"], b["refunded"]) == (1000, 0, 0)
    assert (await client.get(f"/v1/redemptions/{pending['id']}", headers=li["headers"])).json()["status"] == "pending"


async def test_another_merchant_cannot_see_ask_or_cancel_on_my_card(client):
    gym, rival, li, mei, card, pending = await two_of_everything(client)
    assert_error(await client.get(f"/v1/cards/{card['id']}", headers=rival["headers"]), 404)
    assert_error(
        await client.post(f"/v1/cards/{card['id']}/redemptions", json={"amount": 1}, headers=rival["headers"]),
        404,
        "card_not_found",
    )
    assert_error(
        await client.post(f"/v1/redemptions/{pending['id']}/cancel", headers=rival["headers"]),
        404,
        "redemption_not_found",
    )
    assert (await client.get("/v1/merchants/me/cards", headers=rival["headers"])).json()["items"] == []
    stats = (await client.get("/v1/merchants/me/stats", headers=rival["headers"])).json()
    assert stats["issued"] == 0
    assert (await get_card(client, li, card))["balance"]["units_held"] == 1200


async def test_the_owner_the_issuer_a_regulator_an_auditor_and_the_operator_see_the_card(client):
    gym, rival, li, mei, card, pending = await two_of_everything(client)
    amr, bank = await create_regulator(client), await create_auditor(client)
    for who in (li["headers"], gym["headers"], amr["headers"], bank["headers"], OP):
        r = await client.get(f"/v1/cards/{card['id']}", headers=who)
        assert r.status_code == 200 and r.json()["balance"]["escrow"] == 10_000


async def test_only_a_consumer_buys_refunds_confirms_and_rejects(client):
    gym, rival, li, mei, card, pending = await two_of_everything(client)
    for who in (
        gym["headers"],
        OP,
        (await create_regulator(client))["headers"],
        (await create_auditor(client))["headers"],
    ):
        await refused_consumer_calls(client, who, card, pending)
    b = (await get_card(client, li, card))["balance"]
    assert (b["held"], b["released"], b["refunded"]) == (1000, 0, 0)


async def refused_consumer_calls(client, who, card, pending):
    calls = [
        ("/v1/cards", {"product_id": card["product_id"], "payment": {"method": "alipay", "reference": "a"}}),
        (f"/v1/cards/{card['id']}/refund", None),
        (f"/v1/redemptions/{pending['id']}/confirm", None),
        (f"/v1/redemptions/{pending['id']}/reject", None),
    ]
    for url, body in calls:
        assert_error(await client.post(url, json=body, headers=who), 403, "role_not_allowed")


async def test_only_a_merchant_asks_cancels_and_publishes(client):
    gym, rival, li, mei, card, pending = await two_of_everything(client)
    for who in (li["headers"], (await create_regulator(client))["headers"], (await create_auditor(client))["headers"]):
        assert_error(await client.post(f"/v1/cards/{card['id']}/redemptions", json={"amount": 1}, headers=who), 403)
        assert_error(await client.post(f"/v1/redemptions/{pending['id']}/cancel", headers=who), 403)
        assert_error(
            await client.post(
                "/v1/products", json={"type": "count", "name": "x", "price": 1, "uses": 1, "valid_days": 1}, headers=who
            ),
            403,
        )
    assert (await client.get(f"/v1/redemptions/{pending['id']}", headers=li["headers"])).json()["status"] == "pending"


async def test_only_the_operator_onboards_merchants(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    for who in (gym["headers"], li["headers"], (await create_regulator(client))["headers"]):
        assert_error(
            await client.post(
                "/v1/merchants", json={"name": "x", "uscc": "91350100M000100Y43", "category": "x"}, headers=who
            ),
            403,
        )


async def test_no_token_or_a_bad_token_is_unauthorized(client):
    gym, rival, li, mei, card, pending = await two_of_everything(client)
    for headers, code in [
        ({}, "missing_token"),
        ({"Authorization": "Bearer cs_not_a_real_token_at_all_0000000"}, "bad_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "bad_token"),
        ({"Authorization": "Bearer "}, "bad_token"),
        ({"Authorization": "Bearer " + "x" * 500}, "bad_token"),
    ]:
        for method, url in (
            ("GET", f"/v1/cards/{card['id']}"),
            ("POST", f"/v1/cards/{card['id']}/refund"),
            ("POST", f"/v1/redemptions/{pending['id']}/confirm"),
            ("GET", "/v1/consumers/me/cards"),
        ):
            assert_error(await client.request(method, url, headers=headers), 401, code)
    b = (await get_card(client, li, card))["balance"]
    assert (b["held"], b["refunded"]) == (1000, 0)


async def test_a_consumer_token_with_a_merchant_prefix_is_refused(client):
    gym, rival, li, mei, card, pending = await two_of_everything(client)
    forged = "mk_" + li["token"][3:]
    assert_error(
        await client.get(f"/v1/cards/{card['id']}", headers={"Authorization": f"Bearer {forged}"}), 401, "bad_token"
    )
