"""Once a day the sweeper re-assesses every merchant: a code also follows the rolling window moving on
by itself, with no event of the merchant's (SPEC §3; service.health.service._daily_reassessment)."""

from __future__ import annotations

from datetime import timedelta

from api_tests.factories import (
    all_alerts,
    buy_card,
    create_merchant,
    create_regulator,
    health,
    publish_stored_value,
    refund,
    register_consumer,
)
from service.core.clock import OFFSET_KEY
from service.ops.sweeper import sweep_once

PRICE = 10_000


async def _set_clock_offset(ctx, offset: timedelta) -> None:
    """Time passes for the service, as it does in production: no test-clock request, no re-assessment."""

    async def op(tx):
        tx.conn.raw.run(
            "INSERT INTO app_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (OFFSET_KEY, str(offset // timedelta(microseconds=1))),
        )

    await ctx.writer.run(op)


async def test_refunds_leaving_the_window_turn_a_quiet_merchant_green_at_the_daily_sweep(client, ctx):
    regulator = await create_regulator(client)
    salon = await create_merchant(client, "Jade Salon 玉美发", "beauty")
    product = await publish_stored_value(client, salon, price=PRICE, face_value=PRICE)
    consumers = [await register_consumer(client, f"Consumer {i}") for i in range(20)]
    cards = [await buy_card(client, c, product) for c in consumers]
    for i in range(5):  # five consumers refund 2,500 bp of issuance: yellow (threshold 1,500)
        await refund(client, consumers[i], cards[i])
    assert (await health(client, salon))["code"] == "yellow"

    first = await sweep_once(ctx)  # today's pass: every merchant once, nothing changes
    assert first["health_reassessed"] >= 1
    assert (await sweep_once(ctx))["health_reassessed"] == 0  # done for today
    assert (await health(client, salon))["code"] == "yellow"

    # 91 days on (the window is 90) with no event: the sales and refunds have left the window.
    await _set_clock_offset(ctx, ctx.clock.offset + timedelta(days=91))
    assert (await health(client, salon))["code"] == "yellow"  # nothing has looked yet
    assert (await sweep_once(ctx))["health_reassessed"] >= 1
    h = await health(client, salon)
    assert (h["code"], h["indicators"]["window_issued"], h["indicators"]["refund_rate_bp"]) == ("green", 0, 0)
    changes = [
        (a["from_code"], a["to_code"])
        for a in await all_alerts(client, regulator)
        if a["merchant_id"] == salon["id"] and a["kind"] == "code_change"
    ]
    assert changes == [("green", "yellow"), ("yellow", "green")]
    assert (await sweep_once(ctx))["health_reassessed"] == 0
