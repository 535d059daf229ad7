"""Two-phase redemption (SPEC §2): a hold moves nothing until the consumer confirms; each redemption
changes state once, and no answer after the first moves money."""

import pytest

from api_tests.factories import (
    answer,
    ask,
    assert_error,
    buy_card,
    create_merchant,
    get_card,
    move_clock_past,
    publish_stored_value,
    register_consumer,
)


async def a_card_with_a_pending_ask(client, amount: int = 24_000):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000))
    pending = await ask(client, gym, card, amount=amount)
    return gym, li, card, pending


async def test_a_pending_ask_holds_its_share_of_escrow_without_moving_it(client):
    gym, li, card, pending = await a_card_with_a_pending_ask(client)
    assert pending["status"] == "pending" and pending["hold_amount"] == 20_000
    b = (await get_card(client, li, card))["balance"]
    assert (b["escrow"], b["held"], b["available"], b["released"]) == (100_000, 20_000, 80_000, 0)
    assert (b["units_held"], b["units_available"]) == (24_000, 96_000)
    inbox = (await client.get("/v1/consumers/me/redemptions?status=pending", headers=li["headers"])).json()
    assert [r["id"] for r in inbox["items"]] == [pending["id"]]


async def end_by(client, gym, li, pending, how: str):
    if how == "rejected":
        return (await answer(client, li, pending, "reject"))["status"]
    if how == "cancelled":
        return (await answer(client, gym, pending, "cancel"))["status"]
    await move_clock_past(client, pending["expires_at"], seconds=1)
    return (await client.get(f"/v1/redemptions/{pending['id']}", headers=li["headers"])).json()["status"]


@pytest.mark.parametrize("how", ["rejected", "cancelled", "expired"])
async def test_a_redemption_that_is_not_confirmed_moves_nothing(client, how):
    gym, li, card, pending = await a_card_with_a_pending_ask(client)
    assert await end_by(client, gym, li, pending, how) == how
    card_now = await get_card(client, li, card)
    b = card_now["balance"]
    assert (b["escrow"], b["held"], b["available"], b["released"], b["refunded"]) == (100_000, 0, 100_000, 0, 0)
    assert (b["units_used"], b["units_held"], b["units_available"]) == (0, 0, 120_000)
    assert card_now["status"] == "active"
    # Confirming afterwards is a conflict and still moves nothing.
    r = await client.post(f"/v1/redemptions/{pending['id']}/confirm", headers=li["headers"])
    assert_error(r, 409)
    assert (await get_card(client, li, card))["balance"] == b
    assert_error(await client.post(f"/v1/redemptions/{pending['id']}/cancel", headers=gym["headers"]), 409)
    assert_error(await client.post(f"/v1/redemptions/{pending['id']}/reject", headers=li["headers"]), 409)


async def test_a_consumer_who_rejects_a_redemption_keeps_the_money(client):
    gym, li, card, pending = await a_card_with_a_pending_ask(client, amount=120_000)
    rejected = await answer(client, li, pending, "reject")
    assert rejected["status"] == "rejected" and rejected["release_amount"] is None
    assert_error(
        await client.post(f"/v1/redemptions/{pending['id']}/confirm", headers=li["headers"]),
        409,
        "redemption_not_pending",
    )
    # The whole balance is free again: the consumer can still refund all of it in cooling-off.
    r = await client.post(f"/v1/cards/{card['id']}/refund", headers=li["headers"])
    assert r.status_code == 200 and r.json()["amount"] == 100_000


async def test_a_second_confirm_is_a_conflict_and_moves_nothing(client):
    gym, li, card, pending = await a_card_with_a_pending_ask(client)
    first = await answer(client, li, pending, "confirm")
    assert first["status"] == "confirmed" and first["release_amount"] == 20_000
    after_first = (await get_card(client, li, card))["balance"]
    assert_error(
        await client.post(f"/v1/redemptions/{pending['id']}/confirm", headers=li["headers"]),
        409,
        "redemption_not_pending",
    )
    assert (await get_card(client, li, card))["balance"] == after_first
    assert after_first["released"] == 20_000 and after_first["escrow"] == 80_000
    assert_error(
        await client.post(f"/v1/redemptions/{pending['id']}/reject", headers=li["headers"]),
        409,
        "redemption_not_pending",
    )
    assert_error(
        await client.post(f"/v1/redemptions/{pending['id']}/cancel", headers=gym["headers"]),
        409,
        "redemption_not_pending",
    )


async def test_an_ask_unanswered_in_fifteen_minutes_cannot_be_confirmed_even_before_the_sweep(client):
    gym, li, card, pending = await a_card_with_a_pending_ask(client)
    await move_clock_past(client, pending["created_at"], minutes=15, seconds=1)
    assert_error(await client.post(f"/v1/redemptions/{pending['id']}/confirm", headers=li["headers"]), 409)
    b = (await get_card(client, li, card))["balance"]
    assert (b["released"], b["held"], b["escrow"]) == (0, 0, 100_000)


async def test_an_ask_confirmed_just_in_time_releases(client):
    gym, li, card, pending = await a_card_with_a_pending_ask(client)
    await move_clock_past(client, pending["created_at"], minutes=14, seconds=50)
    assert (await answer(client, li, pending, "confirm"))["release_amount"] == 20_000


async def test_expired_holds_free_the_balance_for_the_next_ask(client):
    gym, li, card, pending = await a_card_with_a_pending_ask(client, amount=120_000)
    assert_error(
        await client.post(f"/v1/cards/{card['id']}/redemptions", json={"amount": 1}, headers=gym["headers"]),
        409,
        "insufficient_balance",
    )
    await move_clock_past(client, pending["expires_at"], seconds=1)
    again = await ask(client, gym, card, amount=120_000)
    assert again["hold_amount"] == 100_000
