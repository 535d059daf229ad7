"""Refunds (原路退还, SPEC §2): every cause sends the right amount back by the purchase route, the
merchant gets the rest of what the consumer used, and the card ends."""

from datetime import UTC, datetime, timedelta

from api_tests.factories import (
    ask,
    assert_error,
    buy_card,
    create_merchant,
    create_regulator,
    get_card,
    move_clock_past,
    move_clock_to,
    publish_count,
    publish_stored_value,
    redeem,
    refund,
    register_consumer,
)


def assert_ended(card: dict, rule: str, refunded: int, released: int) -> None:
    assert card["status"] == "refunded" and card["refund_rule"] == rule
    b = card["balance"]
    assert (b["escrow"], b["held"], b["available"], b["refunded"], b["released"]) == (0, 0, 0, refunded, released)
    assert refunded + released == card["price"]


async def test_a_consumer_who_changes_their_mind_within_seven_days_gets_the_full_price_back(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(
        client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000), reference="wx-refund-me"
    )
    await move_clock_past(client, card["purchased_at"], days=6, hours=23)
    pending = await ask(client, gym, card, amount=50_000)  # a hold does not spoil the cooling-off
    answered = await refund(client, li, card)
    assert answered["amount"] == 100_000 and answered["merchant_share"] == 0 and answered["rule"] == "cooling_off"
    assert answered["payment"] == {"method": "wechat_pay", "reference": "wx-refund-me"}
    assert isinstance(answered["ledger_seq"], int)
    assert_ended(await get_card(client, li, card), "cooling_off", refunded=100_000, released=0)
    voided = (await client.get(f"/v1/redemptions/{pending['id']}", headers=li["headers"])).json()
    assert voided["status"] != "pending" and voided["release_amount"] is None
    assert_error(
        await client.post(f"/v1/redemptions/{pending['id']}/confirm", headers=li["headers"]),
        409,
        "redemption_not_pending",
    )


async def test_one_confirmed_redemption_ends_the_cooling_off(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000))
    await redeem(client, gym, li, card, amount=12_000)  # 10,000 fen released
    answered = await refund(client, li, card)
    # quit: 100,000 − 12,000 face used at 1 fen each = 88,000 back; escrow held 90,000; 2,000 to the merchant.
    assert (answered["rule"], answered["amount"], answered["merchant_share"]) == ("consumer_quit", 88_000, 2_000)
    assert_ended(await get_card(client, li, card), "consumer_quit", refunded=88_000, released=12_000)


async def test_a_consumer_who_quits_after_cooling_off_without_using_the_card_gets_the_price_back(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=3))
    await move_clock_past(client, card["cooling_off_ends_at"], seconds=1)
    answered = await refund(client, li, card)
    assert (answered["rule"], answered["amount"], answered["merchant_share"]) == ("consumer_quit", 1000, 0)


async def test_a_quitting_consumer_pays_for_bonus_uses_at_the_list_price(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    # 10 paid + 2 bonus uses for 1000 fen: list price ⌈1000 / 10⌉ = 100 a use.
    product = await publish_count(client, gym, price=1000, uses=12, bonus_uses=2)
    assert product["list_price"] == 100
    card = await buy_card(client, li, product)
    await redeem(client, gym, li, card, uses=5)  # floor(5 × 1000 / 12) = 416 released
    await move_clock_past(client, card["purchased_at"], days=8)
    answered = await refund(client, li, card)
    # 1000 − 5 × 100 = 500 back; escrow had 584, so the merchant gets 84 more.
    assert (answered["rule"], answered["amount"], answered["merchant_share"]) == ("consumer_quit", 500, 84)
    assert_ended(await get_card(client, li, card), "consumer_quit", refunded=500, released=500)


async def test_a_quit_refund_is_never_below_zero(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    # Pay 100,000 for 200,000 face; use 150,000 at list price: more than was paid.
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=200_000))
    await redeem(client, gym, li, card, amount=150_000)  # 75,000 released, 25,000 left
    answered = await refund(client, li, card)
    assert (answered["amount"], answered["merchant_share"]) == (0, 25_000)
    assert_ended(await get_card(client, li, card), "consumer_quit", refunded=0, released=100_000)


async def test_a_quit_refund_is_never_more_than_the_escrow_left(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    # A cheap list price (50 a use) values 5 used at 250, but only 500 is left in escrow.
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=10, list_price=50))
    await redeem(client, gym, li, card, uses=5)
    answered = await refund(client, li, card)
    assert (answered["amount"], answered["merchant_share"]) == (500, 0)
    assert_ended(await get_card(client, li, card), "consumer_quit", refunded=500, released=500)


async def test_a_card_refunded_once_cannot_be_refunded_again(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=3))
    await refund(client, li, card)
    assert_error(
        await client.post(f"/v1/cards/{card['id']}/refund", headers=li["headers"]), 409, "card_already_refunded"
    )
    assert_ended(await get_card(client, li, card), "cooling_off", refunded=1000, released=0)


async def test_an_expired_card_sends_everything_left_back_to_the_consumer(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(
        client, li, await publish_stored_value(client, gym, price=3000, face_value=3600, valid_days=30)
    )
    await redeem(client, gym, li, card, amount=1000)  # floor(1000 × 3000 / 3600) = 833 released
    await ask(client, gym, card, amount=600)  # a hold left pending when the card expires
    swept = await move_clock_past(client, card["expires_at"], seconds=1)
    assert swept["swept"]["cards_refunded"] == 1
    assert_ended(await get_card(client, li, card), "expiry", refunded=3000 - 833, released=833)
    assert_error(
        await client.post(f"/v1/cards/{card['id']}/redemptions", json={"amount": 1}, headers=gym["headers"]), 409
    )


async def test_a_card_one_second_before_expiry_is_left_alone(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=3, valid_days=30))
    await move_clock_past(client, card["expires_at"], seconds=-1)
    assert (await get_card(client, li, card))["status"] == "active"


async def test_a_closing_merchant_sells_nothing_and_refunds_every_card_at_the_date(client):
    gym = await create_merchant(client)
    li, mei = await register_consumer(client), await register_consumer(client, "Han Meimei 韩梅梅")
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    used = await buy_card(client, li, product)
    untouched = await buy_card(client, mei, product)
    await redeem(client, gym, li, used, amount=6000)  # half the face: 5,000 released

    closing_at = datetime.now(UTC) + timedelta(days=31)
    r = await client.post(
        "/v1/merchants/me/closure",
        json={"effective_date": closing_at.isoformat(), "reason": "搬迁"},
        headers=gym["headers"],
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "closing"
    assert_error(
        await client.post(
            "/v1/cards",
            json={"product_id": product["id"], "payment": {"method": "alipay", "reference": "ali-1"}},
            headers=mei["headers"],
        ),
        409,
        "merchant_not_selling",
    )

    await move_clock_to(client, closing_at + timedelta(minutes=1))
    assert_ended(await get_card(client, li, used), "merchant_closure", refunded=5000, released=5000)
    assert_ended(await get_card(client, mei, untouched), "merchant_closure", refunded=10_000, released=0)
    assert (await client.get("/v1/merchants/me", headers=gym["headers"])).json()["status"] == "closed"


async def test_a_closure_must_be_announced_thirty_days_ahead(client):
    gym = await create_merchant(client)
    soon = datetime.now(UTC) + timedelta(days=29)
    assert_error(
        await client.post(
            "/v1/merchants/me/closure", json={"effective_date": soon.isoformat(), "reason": "x"}, headers=gym["headers"]
        ),
        422,
        "closure_notice_too_short",
    )
    assert (await client.get("/v1/merchants/me", headers=gym["headers"])).json()["status"] == "active"


async def test_a_defaulted_merchant_refunds_every_card_at_once_and_voids_every_hold(client):
    gym = await create_merchant(client)
    amr = await create_regulator(client)
    li, mei = await register_consumer(client), await register_consumer(client, "Han Meimei 韩梅梅")
    product = await publish_count(client, gym, price=1000, uses=3)
    lis = await buy_card(client, li, product)
    meis = await buy_card(client, mei, product)
    await redeem(client, gym, li, lis, uses=1)  # 333 released
    pending = await ask(client, gym, meis, uses=2)

    r = await client.post(
        f"/v1/merchants/{gym['id']}/default", json={"reason": "跑路 ran away"}, headers=amr["headers"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "defaulted" and r.json()["cards_refunded"] == 2

    assert_ended(await get_card(client, li, lis), "merchant_default", refunded=667, released=333)
    assert_ended(await get_card(client, mei, meis), "merchant_default", refunded=1000, released=0)
    assert_error(
        await client.post(f"/v1/redemptions/{pending['id']}/confirm", headers=mei["headers"]),
        409,
        "redemption_not_pending",
    )
    assert (await get_card(client, mei, meis))["balance"]["released"] == 0
    assert_error(
        await client.post(
            "/v1/cards",
            json={"product_id": product["id"], "payment": {"method": "alipay", "reference": "ali-2"}},
            headers=li["headers"],
        ),
        409,
        "merchant_not_selling",
    )
    assert_error(await client.post(f"/v1/cards/{lis['id']}/redemptions", json={"uses": 1}, headers=gym["headers"]), 409)
    assert_error(
        await client.post(f"/v1/cards/{lis['id']}/refund", headers=li["headers"]), 409, "card_already_refunded"
    )


async def test_the_operator_may_declare_a_default_too_but_not_twice(client, operator_headers):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=3))
    r = await client.post(f"/v1/merchants/{gym['id']}/default", json={"reason": "gone"}, headers=operator_headers)
    assert r.status_code == 200, r.text
    assert_ended(await get_card(client, li, card), "merchant_default", refunded=1000, released=0)
    assert_error(
        await client.post(f"/v1/merchants/{gym['id']}/default", json={"reason": "gone"}, headers=operator_headers), 409
    )
