"""Events (SPEC §9): written with the change, scoped per caller, with a cursor and a long-poll."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from api_tests.factories import (
    answer,
    ask,
    assert_error,
    buy_card,
    create_auditor,
    create_merchant,
    create_regulator,
    customer_of,
    file_complaint,
    publish_count,
    refund,
    register_consumer,
)


async def events_of(client, party: dict, **params) -> list[dict]:
    items, after = [], None
    while True:
        query = {"limit": 500, **params, **({"after": after} if after else {})}
        r = await client.get("/v1/events", params=query, headers=party["headers"])
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        if not body["items"]:
            return items
        after = body["next_cursor"]


async def test_a_merchant_and_a_consumer_see_their_own_events_and_no_one_elses(client):
    gym, spa = await create_merchant(client, "Iron Gym"), await create_merchant(client, "Calm Spa")
    li, wang = await register_consumer(client, "Li Lei"), await register_consumer(client, "Wang Wu")
    card = await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
    other = await buy_card(client, wang, await publish_count(client, spa, 20_000, 5))
    hold = await ask(client, gym, card, uses=1)
    confirmed = await answer(client, li, hold, "confirm")
    await ask(client, spa, other, uses=1)
    await refund(client, li, card)

    mine = await events_of(client, gym)
    assert [e["type"] for e in mine] == [
        "card.purchased",
        "redemption.requested",
        "redemption.confirmed",
        "card.refunded",
    ]
    assert all(e["id"].startswith("evt_") for e in mine)
    assert {e["data"].get("merchant_id", gym["id"]) for e in mine} == {gym["id"]}
    assert mine[0]["data"]["id"] == card["id"] and mine[0]["ledger_seq"] == card["ledger_seq"]
    assert mine[2]["data"]["release_amount"] == confirmed["release_amount"]
    assert mine[2]["ledger_seq"] == confirmed["ledger_seq"]
    assert [int(e["cursor"]) for e in mine] == sorted(int(e["cursor"]) for e in mine)

    spa_types = [e["type"] for e in await events_of(client, spa)]
    assert spa_types == ["card.purchased", "redemption.requested"]
    li_events = await events_of(client, li)
    assert [e["type"] for e in li_events] == [e["type"] for e in mine]
    wang_events = await events_of(client, wang)
    assert {e["data"]["consumer_id"] for e in wang_events} == {wang["id"]}
    assert not {e["id"] for e in wang_events} & {e["id"] for e in li_events}
    # Nothing personal: no consumer's name or phone anywhere in what the merchant receives.
    text = str(mine)
    assert "Li Lei" not in text and li["phone"] not in text


async def test_regulators_see_everything_and_auditors_only_money(client, operator_headers):
    gym = await create_merchant(client)
    regulator, auditor = await create_regulator(client), await create_auditor(client)
    for i in range(5):  # five customers' complaints turn a new merchant yellow: an alert
        await file_complaint(client, await customer_of(client, gym, f"Customer {i}"), gym)
    everything = {e["type"] for e in await events_of(client, regulator)}
    assert {"card.purchased", "complaint.filed", "merchant.health_changed", "alert.created"} <= everything
    assert {e["type"] for e in await events_of(client, auditor)} == {"card.purchased"}
    assert "alert.created" not in {e["type"] for e in await events_of(client, gym)}
    only = await events_of(client, regulator, types="complaint.filed")
    assert len(only) == 5 and {e["type"] for e in only} == {"complaint.filed"}
    r = await client.get("/v1/events", params={"types": "card.stolen"}, headers=regulator["headers"])
    assert_error(r, 422, "unknown_event_type")


async def test_regulatory_acts_reach_the_alert_feed_with_their_events(client, operator_headers):
    gym = await create_merchant(client)
    regulator = await create_regulator(client)
    r = await client.post(
        f"/v1/merchants/{gym['id']}/abnormal-list", json={"listed": True}, headers=regulator["headers"]
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        f"/v1/merchants/{gym['id']}/default", json={"reason": "Ran away."}, headers=regulator["headers"]
    )
    assert r.status_code == 200, r.text
    alerts = (await client.get("/v1/alerts", headers=regulator["headers"])).json()["items"]
    assert [a["kind"] for a in alerts if a["merchant_id"] == gym["id"]] == ["abnormal_listed", "merchant_defaulted"]
    types = [e["type"] for e in await events_of(client, regulator)]
    assert types[-4:] == ["alert.created", "merchant.abnormal_listed", "alert.created", "merchant.defaulted"]
    assert [e["type"] for e in await events_of(client, gym)][-2:] == ["merchant.abnormal_listed", "merchant.defaulted"]


async def test_a_long_poll_returns_as_soon_as_an_event_arrives(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
    [purchased] = await events_of(client, gym)

    async def poll():
        r = await client.get("/v1/events", params={"after": purchased["cursor"], "wait": 20}, headers=gym["headers"])
        return r.json()

    waiting = asyncio.create_task(poll())
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nothing new yet: the poll is held
    hold = await ask(client, gym, card, uses=1)
    body = await asyncio.wait_for(waiting, 15)
    assert [e["data"]["id"] for e in body["items"]] == [hold["id"]]
    # An empty poll keeps the cursor.
    r = await client.get("/v1/events", params={"after": body["next_cursor"], "wait": 0.1}, headers=gym["headers"])
    assert r.json() == {"items": [], "next_cursor": body["next_cursor"]}


async def test_the_consumer_inbox_long_poll_answers_when_a_new_ask_arrives(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
    first = await ask(client, gym, card, uses=1)
    url = "/v1/consumers/me/redemptions"
    r = await client.get(url, params={"status": "pending", "wait": 20}, headers=li["headers"])
    assert [x["id"] for x in r.json()["items"]] == [first["id"]]  # items already there: at once

    async def poll():
        return (
            await client.get(url, params={"status": "pending", "wait": 20, "after": first["id"]}, headers=li["headers"])
        ).json()

    waiting = asyncio.create_task(poll())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    second = await ask(client, gym, card, uses=1)
    body = await asyncio.wait_for(waiting, 15)
    assert [x["id"] for x in body["items"]] == [second["id"]]
    r = await client.get(url, params={"status": "pending", "wait": 0.1, "after": second["id"]}, headers=li["headers"])
    assert r.json() == {"items": [], "next_cursor": None}
    assert_error(await client.get(url, params={"wait": 31}, headers=li["headers"]), 422)


async def test_events_are_kept_for_the_retention_then_pruned_by_the_sweeper(client, ctx):
    from api_tests.factories import move_clock_to, parse_time
    from service.ops.sweeper import sweep_once

    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
    await move_clock_to(client, parse_time(card["purchased_at"]) + timedelta(days=29))
    await sweep_once(ctx)
    assert [e["type"] for e in await events_of(client, gym)] == ["card.purchased"]
    await move_clock_to(client, parse_time(card["purchased_at"]) + timedelta(days=31))
    await sweep_once(ctx)  # (moving the test clock sweeps too)
    assert await events_of(client, gym) == []


async def test_the_feed_and_the_webhook_fan_out_apply_one_visibility_rule(client, ctx):
    """What `GET /v1/events` shows each caller (SQL, `visible_to`) is exactly what the webhook dispatcher
    would fan out to an endpoint of that owner (`may_see`, in Python), event by event."""
    from sqlalchemy import select

    from service.event_log.repository import events_t, may_see

    gym, salon = await create_merchant(client), await create_merchant(client, "Lily Salon 丽丽美发", "beauty")
    regulator, auditor = await create_regulator(client), await create_auditor(client)
    li, wang = await register_consumer(client), await register_consumer(client, "Wang Fang 王芳")
    card = await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
    await buy_card(client, wang, await publish_count(client, salon, 5_000, 5))
    rdm = await ask(client, gym, card, uses=1)
    await answer(client, li, rdm, "confirm")
    await refund(client, li, card)
    for i in range(5):  # an alert and a health change on the salon
        await file_complaint(client, await customer_of(client, salon, f"Customer {i}"), salon)
    async with ctx.engines.reader.connect() as conn:
        every = (await conn.execute(select(events_t).order_by(events_t.c.seq))).all()
    assert len({e.type for e in every}) >= 5
    parties = [("merchant", gym), ("merchant", salon), ("consumer", li), ("consumer", wang)]
    parties += [("regulator", regulator), ("auditor", auditor)]
    for role, party in parties:
        shown = [e["id"] for e in await events_of(client, party)]
        assert shown == [e.id for e in every if may_see(role, party["id"], e)], role
        assert 0 < len(shown) <= len(every)
