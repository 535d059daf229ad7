"""ESCROW_RISK_INCREMENTAL=false (benchmarks only) turns the health-code updates off: the writer hands the
setting to every transaction (Tx.risk_events), so a card sold then moves money but not the merchant's
counters; switched back on, the next sale counts again."""

from __future__ import annotations

from api_tests.factories import buy_card, create_merchant, health, publish_stored_value, register_consumer

PRICE = 10_000


async def test_with_risk_events_off_a_sale_moves_money_but_not_the_health_counters(client, ctx):
    gym = await create_merchant(client, "Iron Gym 铁馆健身", "fitness")
    product = await publish_stored_value(client, gym, price=PRICE, face_value=PRICE)
    consumer = await register_consumer(client)
    assert (await health(client, gym))["indicators"]["window_issued"] == 0

    ctx.writer.risk_events = False
    try:
        card = await buy_card(client, consumer, product)
    finally:
        ctx.writer.risk_events = True
    assert card["balance"]["escrow"] == PRICE
    assert (await health(client, gym))["indicators"]["window_issued"] == 0

    await buy_card(client, consumer, product)
    assert (await health(client, gym))["indicators"]["window_issued"] == PRICE
