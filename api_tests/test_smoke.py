"""The first story: buy, ask, confirm, refund."""

from api_tests.factories import answer, ask, buy_card, create_merchant, get_card, publish, register_consumer


async def test_a_consumer_buys_a_card_confirms_a_redemption_and_refunds(client):
    gym = await create_merchant(client)
    product = await publish(client, gym)
    li = await register_consumer(client)
    card = await buy_card(client, li, product)
    assert card["balance"]["escrow"] == 100_000
    r = await ask(client, gym, card, amount=12_000)
    assert r["status"] == "pending"
    done = await answer(client, li, r, "confirm")
    assert done["release_amount"] == 10_000 and isinstance(done["ledger_seq"], int)
    card = await get_card(client, li, card)
    assert card["balance"]["escrow"] == 90_000
    r = await client.post(f"/v1/cards/{card['id']}/refund", headers=li["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["rule"] == "consumer_quit"
