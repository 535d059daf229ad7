"""A salon whose consumers pull their money out goes green → yellow → red: the regulator's feed
follows every change, red publishes a warning, the grace period ends in a delisting, and a code that
improves lifts the warning. Numbers come from the default policy (risk/policy.py): twenty cards of
10,000 fen, each to its own consumer, make the salon judged on rates; each cooling-off refund is 500
bp of issuance. The refund rate is judged once five distinct consumers refunded (min_refund_consumers):
four refunds (2,000 bp) leave it green, the fifth makes it yellow (2,500 bp, over 1,500), the sixth
red (3,000 bp)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from api_tests.factories import (
    all_alerts,
    assert_error,
    buy_card,
    create_auditor,
    create_merchant,
    create_regulator,
    health,
    ledger_entries,
    move_clock_to,
    my_merchant,
    parse_time,
    poll_alerts,
    publish_stored_value,
    refund,
    register_consumer,
)

PRICE = 10_000


async def _salon_with_cards(client, n: int = 20):
    salon = await create_merchant(client, "Jade Salon 玉美发", "beauty")
    product = await publish_stored_value(client, salon, price=PRICE, face_value=PRICE)
    consumers = [await register_consumer(client, f"Consumer {i}") for i in range(n)]
    cards = [await buy_card(client, c, product) for c in consumers]
    return salon, product, consumers, cards


async def test_refunds_turn_a_salon_yellow_then_red_and_the_feed_tells_the_regulator(client):
    regulator = await create_regulator(client)
    gym = await create_merchant(client, "Iron Gym 铁馆健身", "fitness")
    salon, product, consumers, cards = await _salon_with_cards(client)

    h = await health(client, salon)
    assert (h["code"], h["new_merchant"], h["indicators"]["window_issued"]) == ("green", False, 20 * PRICE)
    assert await all_alerts(client, regulator) == []

    # Four consumers' cooling-off refunds: 2,000 bp, over the yellow line, but four people are not yet a
    # pattern (min_refund_consumers 5); the fifth consumer's refund makes 2,500 bp, judged: yellow.
    for i in range(4):
        await refund(client, consumers[i], cards[i])
    h = await health(client, salon)
    assert (h["code"], h["indicators"]["refund_rate_bp"], h["indicators"]["refund_consumers"]) == ("green", 2_000, 4)
    await refund(client, consumers[4], cards[4])
    h = await health(client, salon)
    assert h["code"] == "yellow" and h["warning"] is None
    assert h["reasons"] == [{"indicator": "refund_rate_bp", "value": 2_500, "threshold": 1_500, "level": "yellow"}]
    assert (h["indicators"]["refund_rate_bp"], h["indicators"]["refund_consumers"]) == (2_500, 5)

    feed = await poll_alerts(client, regulator)
    [yellow] = feed["items"]
    assert (yellow["kind"], yellow["merchant_id"], yellow["from_code"], yellow["to_code"], yellow["status"]) == (
        "code_change",
        salon["id"],
        "green",
        "yellow",
        "open",
    )
    assert yellow["reasons"] == h["reasons"]
    cursor = feed["next_cursor"]
    assert (await poll_alerts(client, regulator, after=cursor))["items"] == []  # nothing new since

    # Green merchants come first in the public directory.
    r = await client.get("/v1/merchants")
    assert r.status_code == 200, r.text
    ids = [m["id"] for m in r.json()["items"]]
    assert ids.index(gym["id"]) < ids.index(salon["id"])
    listed = {m["id"]: m for m in r.json()["items"]}
    assert (listed[gym["id"]]["code"], listed[salon["id"]]["code"]) == ("green", "yellow")
    r = await client.get("/v1/merchants", params={"code": "yellow"})
    assert [m["id"] for m in r.json()["items"]] == [salon["id"]]

    # A long poll waiting on the cursor returns the alert of the sixth refund, made while it waited (a poll
    # that answered its first, empty read would have no item; one that missed the alert would hang to 30 s).
    async def sixth_refund():
        await asyncio.sleep(0.3)
        return await refund(client, consumers[5], cards[5])

    polled, _ = await asyncio.gather(poll_alerts(client, regulator, after=cursor, wait=30), sixth_refund())
    [red] = polled["items"]
    assert (red["kind"], red["from_code"], red["to_code"]) == ("code_change", "yellow", "red")
    assert red["reasons"] == [{"indicator": "refund_rate_bp", "value": 3_000, "threshold": 3_000, "level": "red"}]
    cursor = polled["next_cursor"]

    # Red publishes the warning at once (公示预警).
    h = await health(client, salon)
    assert h["code"] == "red" and h["warning"] is not None and h["delisted"] is False
    assert parse_time(h["warning"]["published_at"]) == parse_time(h["since"])
    assert (await my_merchant(client, salon))["status"] == "warned"
    assert (await my_merchant(client, gym))["status"] == "active"

    # The regulator checks offline: acknowledge, then resolve with the finding; resolving twice is a 409.
    r = await client.post(f"/v1/alerts/{yellow['id']}/acknowledge", headers=regulator["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "acknowledged" and r.json()["acknowledged_at"]
    r = await client.post(
        f"/v1/alerts/{yellow['id']}/resolve",
        json={"finding": "Refunds checked: shop under renovation."},
        headers=regulator["headers"],
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["finding"]) == ("resolved", "Refunds checked: shop under renovation.")
    r = await client.post(f"/v1/alerts/{yellow['id']}/resolve", json={"finding": "again"}, headers=regulator["headers"])
    assert_error(r, 409, "alert_state_conflict")
    r = await client.post(f"/v1/alerts/{red['id']}/acknowledge", headers=salon["headers"])
    assert_error(r, 403)

    # Still red after the 14-day grace period: delisted automatically, and the feed says so.
    await move_clock_to(client, parse_time(h["since"]) + timedelta(days=15))
    h = await health(client, salon)
    assert h["code"] == "red" and h["delisted"] is True
    feed = await poll_alerts(client, regulator, after=cursor)
    [delisted] = feed["items"]
    assert (delisted["kind"], delisted["merchant_id"], delisted["to_code"]) == ("delisted", salon["id"], "red")
    assert (await my_merchant(client, salon))["status"] == "delisted"
    late = await register_consumer(client, "Late buyer")
    r = await client.post(
        "/v1/cards",
        json={"product_id": product["id"], "payment": {"method": "alipay", "reference": "ali-1"}},
        headers=late["headers"],
    )
    assert_error(r, 409, "merchant_not_selling")
    r = await client.get("/v1/merchants")
    assert {m["id"]: m for m in r.json()["items"]}[salon["id"]]["selling"] is False

    # The regulator lifts the delisting: the salon sells again (still red, still warned).
    r = await client.post(
        f"/v1/merchants/{salon['id']}/delisting", json={"listed": False}, headers=regulator["headers"]
    )
    assert r.status_code == 200, r.text
    assert (await health(client, salon))["delisted"] is False
    await buy_card(client, late, product)

    # That sale alone brings refunds under 30% (60,000 of 210,000 = 2,857 bp): the code improves to
    # yellow, which lifts the warning.
    h = await health(client, salon)
    assert h["code"] == "yellow" and h["warning"] is None
    assert h["reasons"] == [{"indicator": "refund_rate_bp", "value": 2_857, "threshold": 1_500, "level": "yellow"}]
    assert (await my_merchant(client, salon))["status"] == "active"

    # Enough fresh sales bring refunds under 15% of issuance (60,000 of 410,000 = 1,463 bp): green.
    for i in range(20):
        await buy_card(client, await register_consumer(client, f"Returning {i}"), product)
    h = await health(client, salon)
    assert (h["code"], h["warning"], h["reasons"]) == ("green", None, [])
    assert h["indicators"]["refund_rate_bp"] == 60_000 * 10_000 // 410_000
    assert (await my_merchant(client, salon))["status"] == "active"

    alerts = await all_alerts(client, regulator, salon)
    assert [(a["kind"], a["from_code"], a["to_code"]) for a in alerts] == [
        ("code_change", "green", "yellow"),
        ("code_change", "yellow", "red"),
        ("delisted", "red", "red"),
        ("delisting_lifted", None, None),
        ("code_change", "red", "yellow"),
        ("code_change", "yellow", "green"),
    ]
    assert [int(a["cursor"]) for a in alerts] == sorted(int(a["cursor"]) for a in alerts)
    assert await all_alerts(client, regulator, gym) == []

    # Every code change, the warning and the delisting are ledger entries, each pointed to by its alert.
    auditor = await create_auditor(client)
    entries = [e for e in await ledger_entries(client, auditor, limit=100) if e.get("canonical")]
    import json

    mine = [(e["seq"], e["kind"], json.loads(e["canonical"])) for e in entries]
    mine = [(seq, kind, body) for seq, kind, body in mine if body.get("merchant_id") == salon["id"]]
    kinds = [kind for _, kind, _ in mine]
    for kind in ("health_code", "warning_published", "delisted", "delisting_lifted", "warning_lifted"):
        assert kind in kinds, kinds
    changes = [(b["from_code"], b["to_code"]) for _, k, b in mine if k == "health_code"]
    assert changes == [("green", "yellow"), ("yellow", "red"), ("red", "yellow"), ("yellow", "green")]
    by_seq = {seq: kind for seq, kind, _ in mine}
    assert [by_seq[a["ledger_seq"]] for a in alerts] == [
        "health_code",
        "health_code",
        "delisted",
        "delisting_lifted",
        "health_code",
        "health_code",
    ]
    assert kinds.index("warning_published") < kinds.index("delisted") < kinds.index("warning_lifted")
