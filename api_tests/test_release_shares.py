"""Release shares (SPEC §2): each confirmed redemption moves the cumulative-floor share of the price
to the merchant, down to the last fen; the card is exhausted exactly when the whole price is out."""

from api_tests.factories import (
    answer,
    ask,
    assert_error,
    buy_card,
    create_merchant,
    get_card,
    move_clock_past,
    publish_count,
    publish_period,
    publish_stored_value,
    redeem,
    register_consumer,
)


def released_after(units_used: int, price: int, units_total: int) -> int:
    """What SPEC §2 says has left escrow after `units_used` of `units_total`: floor(C × price / total)."""
    return (units_used * price) // units_total


async def redeem_in_pieces(client, merchant, consumer, card, unit: str, pieces: list[int], price: int, total: int):
    used = 0
    for piece in pieces:
        done = await redeem(client, merchant, consumer, card, **{unit: piece})
        expected = released_after(used + piece, price, total) - released_after(used, price, total)
        assert done["release_amount"] == expected, (piece, done)
        used += piece
        balance = (await get_card(client, consumer, card))["balance"]
        assert balance["released"] == released_after(used, price, total)
        assert balance["released"] <= price
        assert balance["escrow"] == price - balance["released"]
        assert balance["units_used"] == used and balance["units_left"] == total - used
    return await get_card(client, consumer, card)


async def test_a_bonus_stored_value_card_releases_the_price_share_of_each_face_value_used(client):
    gym = await create_merchant(client)
    card = await buy_card(
        client,
        li := await register_consumer(client),
        await publish_stored_value(client, gym, price=100_000, face_value=120_000),
    )
    # 12,000 of 120,000 face is a tenth: a tenth of 100,000 fen paid leaves escrow.
    first = await redeem(client, gym, li, card, amount=12_000)
    assert first["release_amount"] == 10_000
    second = await redeem(client, gym, li, card, amount=1)  # floor(12001 × 100000 / 120000) = 10000
    assert second["release_amount"] == 0
    third = await redeem(client, gym, li, card, amount=5)  # floor(12006 × 5/6) = 10005
    assert third["release_amount"] == 5
    last = await redeem(client, gym, li, card, amount=120_000 - 12_006)
    assert last["release_amount"] == 100_000 - 10_005
    card = await get_card(client, li, card)
    assert card["status"] == "exhausted"
    assert card["balance"] == {
        **card["balance"],
        "escrow": 0,
        "held": 0,
        "available": 0,
        "released": 100_000,
        "refunded": 0,
        "units_used": 120_000,
        "units_left": 0,
    }


async def test_an_awkward_stored_value_card_redeemed_in_odd_pieces_never_loses_or_invents_a_fen(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=1000, face_value=3333))
    pieces = [1, 2, 7, 100, 999, 1111, 1113]
    assert sum(pieces) == 3333
    card = await redeem_in_pieces(client, gym, li, card, "amount", pieces, price=1000, total=3333)
    assert card["status"] == "exhausted"
    assert card["balance"]["released"] == 1000 and card["balance"]["escrow"] == 0


async def test_a_stored_value_card_is_still_active_one_fen_before_the_end(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=999, face_value=1000))
    await redeem(client, gym, li, card, amount=999)  # floor(999 × 999 / 1000) = 998
    card = await get_card(client, li, card)
    assert card["status"] == "active"
    assert card["balance"]["released"] == 998 and card["balance"]["escrow"] == 1
    last = await redeem(client, gym, li, card, amount=1)
    assert last["release_amount"] == 1
    assert (await get_card(client, li, card))["status"] == "exhausted"


async def test_a_three_use_card_releases_333_333_then_334(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=3))
    shares = [(await redeem(client, gym, li, card, uses=1))["release_amount"] for _ in range(3)]
    assert shares == [333, 333, 334]
    card = await get_card(client, li, card)
    assert card["status"] == "exhausted" and card["balance"]["released"] == 1000
    assert_error(
        await client.post(f"/v1/cards/{card['id']}/redemptions", json={"uses": 1}, headers=gym["headers"]),
        409,
        "card_not_active",
    )


async def test_bonus_uses_are_part_of_the_uses_that_share_the_price(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    # 10 paid uses + 2 bonus: 12 uses share 1000 fen.
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=12, bonus_uses=2))
    card = await redeem_in_pieces(client, gym, li, card, "uses", [5, 5, 2], price=1000, total=12)
    assert [released_after(k, 1000, 12) for k in (5, 10, 12)] == [416, 833, 1000]
    assert card["status"] == "exhausted"


async def test_a_count_card_cannot_be_asked_for_more_uses_than_it_has(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=3))
    assert_error(
        await client.post(f"/v1/cards/{card['id']}/redemptions", json={"uses": 4}, headers=gym["headers"]),
        409,
        "insufficient_balance",
    )
    assert (await get_card(client, li, card))["balance"]["held"] == 0


async def test_a_period_card_redeems_only_periods_that_have_ended(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_period(client, gym, price=1000, periods=3, period_days=30))
    url = f"/v1/cards/{card['id']}/redemptions"
    assert_error(await client.post(url, json={"periods": 1}, headers=gym["headers"]), 409, "period_not_ended")

    await move_clock_past(client, card["purchased_at"], days=30, minutes=1)
    assert_error(await client.post(url, json={"periods": 2}, headers=gym["headers"]), 409, "period_not_ended")
    assert (await redeem(client, gym, li, card, periods=1))["release_amount"] == 333
    assert_error(await client.post(url, json={"periods": 1}, headers=gym["headers"]), 409, "period_not_ended")

    await move_clock_past(client, card["purchased_at"], days=90, minutes=1)
    assert (await redeem(client, gym, li, card, periods=2))["release_amount"] == 1000 - 333
    card = await get_card(client, li, card)
    assert card["status"] == "exhausted" and card["balance"]["released"] == 1000 and card["balance"]["escrow"] == 0
    assert_error(await client.post(url, json={"periods": 4}, headers=gym["headers"]), 409)


async def test_a_pending_period_hold_counts_against_the_ended_periods(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_period(client, gym, price=900, periods=3, period_days=7))
    await move_clock_past(client, card["purchased_at"], days=7, minutes=1)
    held = await ask(client, gym, card, periods=1)
    assert held["hold_amount"] == 300
    assert_error(
        await client.post(f"/v1/cards/{card['id']}/redemptions", json={"periods": 1}, headers=gym["headers"]),
        409,
        "period_not_ended",
    )
    await answer(client, li, held, "confirm")
    assert (await get_card(client, li, card))["balance"]["released"] == 300


async def test_sum_of_releases_never_exceeds_the_price_for_many_shapes(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    for price, face, pieces in [
        (1, 7, [3, 3, 1]),
        (7, 7, [1] * 7),
        (500_000, 500_001, [250_000, 250_001]),
        (997, 1009, [13, 500, 496]),
    ]:
        card = await buy_card(client, li, await publish_stored_value(client, gym, price=price, face_value=face))
        card = await redeem_in_pieces(client, gym, li, card, "amount", pieces, price=price, total=face)
        assert card["status"] == "exhausted" and card["balance"]["released"] == price
