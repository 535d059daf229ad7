"""The regulators' alert feed: who may read it, the cursor, long polls that time out empty, and the
open → acknowledged → resolved workflow."""

from __future__ import annotations

import asyncio

from api_tests.factories import (
    OP,
    all_alerts,
    assert_error,
    create_merchant,
    create_regulator,
    customer_of,
    file_complaint,
    poll_alerts,
    put_policy,
    register_consumer,
)


async def test_alert_feed_is_for_regulators_and_long_polls_time_out_empty(client):
    regulator = await create_regulator(client)
    consumer = await register_consumer(client)
    merchant = await create_merchant(client)
    assert_error(await client.get("/v1/alerts"), 401)
    assert_error(await client.get("/v1/alerts", headers=consumer["headers"]), 403)
    assert_error(await client.get("/v1/alerts", headers=merchant["headers"]), 403)
    assert (await client.get("/v1/alerts", headers=OP)).status_code == 200
    assert_error(await client.get("/v1/alerts", params={"wait": 61}, headers=OP), 422)
    body = await poll_alerts(client, regulator, wait=0.6)
    assert body == {"items": [], "next_cursor": None}

    # A poll parked on an empty feed answers with the alert made while it waited (not its first, empty read).
    await put_policy(client, {"complaints": {"yellow": 1, "red": 2}})  # one complaint: yellow
    customer = await customer_of(client, merchant)

    async def complain_later():
        await asyncio.sleep(0.3)
        await file_complaint(client, customer, merchant)

    polled, _ = await asyncio.gather(poll_alerts(client, regulator, wait=30), complain_later())
    assert [(a["merchant_id"], a["to_code"]) for a in polled["items"]] == [(merchant["id"], "yellow")]
    r = await client.post("/v1/alerts/alt_nope/acknowledge", headers=regulator["headers"])
    assert_error(r, 404, "alert_not_found")


async def test_cursor_pages_through_alerts_of_several_merchants_in_order(client):
    regulator = await create_regulator(client)
    await put_policy(client, {"complaints": {"yellow": 1, "red": 2}})  # one complaint: yellow, two: red
    shops = [await create_merchant(client, f"Shop {i}") for i in range(3)]
    # Each shop's two customers complain in turn (a complaint counts once per card-holding consumer).
    customers = [[await customer_of(client, shop, f"Customer {i}") for i in range(2)] for shop in shops]
    for shop, theirs in zip(shops, customers):
        await file_complaint(client, theirs[0], shop)
    for shop, theirs in zip(shops, customers):
        await file_complaint(client, theirs[1], shop)

    first = await poll_alerts(client, regulator, limit=4)
    assert len(first["items"]) == 4
    rest = await poll_alerts(client, regulator, after=first["next_cursor"], limit=4)
    assert len(rest["items"]) == 2
    items = first["items"] + rest["items"]
    assert [(a["merchant_id"], a["to_code"]) for a in items] == (
        [(s["id"], "yellow") for s in shops] + [(s["id"], "red") for s in shops]
    )
    assert [int(a["cursor"]) for a in items] == sorted({int(a["cursor"]) for a in items})
    empty = await poll_alerts(client, regulator, after=rest["next_cursor"])
    assert empty == {"items": [], "next_cursor": rest["next_cursor"]}  # the cursor stays where it was
    assert await all_alerts(client, regulator, shops[1]) == [items[1], items[4]]


async def test_resolving_an_open_alert_acknowledges_it_too_and_each_step_happens_once(client):
    regulator = await create_regulator(client)
    shop = await create_merchant(client)
    for i in range(5):  # five customers' complaints: the default complaint count's yellow line
        await file_complaint(client, await customer_of(client, shop, f"C{i}"), shop)
    [alert] = await all_alerts(client, regulator, shop)

    r = await client.post(f"/v1/alerts/{alert['id']}/resolve", json={"finding": ""}, headers=regulator["headers"])
    assert r.status_code == 422, r.text  # a finding is required
    r = await client.post(
        f"/v1/alerts/{alert['id']}/resolve",
        json={"finding": "Visited: open and serving."},
        headers=regulator["headers"],
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "resolved" and done["acknowledged_at"] == done["resolved_at"] is not None
    assert_error(
        await client.post(f"/v1/alerts/{alert['id']}/acknowledge", headers=regulator["headers"]),
        409,
        "alert_state_conflict",
    )
    [again] = await all_alerts(client, regulator, shop)
    assert (again["status"], again["finding"]) == ("resolved", "Visited: open and serving.")
