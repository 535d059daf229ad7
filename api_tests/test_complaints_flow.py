"""Complaints (投诉): a consumer files, the merchant answers its own within 24 hours, a regulator or the
operator resolves. An unanswered complaint turns overdue and the merchant's code yellow (default
overdue_complaints yellow 1); complaints are a count judged even for a merchant too new for rates
(default complaints yellow 5, red 20)."""

from __future__ import annotations

from datetime import timedelta

from api_tests.factories import (
    OP,
    all_alerts,
    assert_error,
    buy_card,
    create_merchant,
    create_regulator,
    customer_of,
    file_complaint,
    health,
    move_clock_to,
    parse_time,
    publish_stored_value,
    put_policy,
    register_consumer,
)


async def test_file_respond_resolve_each_party_in_its_own_lane(client):
    regulator = await create_regulator(client)
    gym = await create_merchant(client, "Iron Gym 铁馆健身", "fitness")
    other = await create_merchant(client, "Lotus Spa 莲花水疗", "beauty")
    li = await register_consumer(client, "Li Lei 李雷")
    han = await register_consumer(client, "Han Meimei 韩梅梅")
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=50_000, face_value=60_000))

    c = await file_complaint(client, li, gym, card, category="refund_refused", text="They refused my refund.")
    assert (c["status"], c["merchant_id"], c["consumer_id"], c["card_id"], c["overdue"]) == (
        "open",
        gym["id"],
        li["id"],
        card["id"],
        False,
    )
    assert parse_time(c["due_at"]) - parse_time(c["created_at"]) == timedelta(hours=24)
    assert (await health(client, gym))["indicators"]["complaints"] == 1

    # Only consumers file; a card must be the consumer's own and at that merchant.
    r = await client.post(
        "/v1/complaints", json={"merchant_id": gym["id"], "category": "other", "text": "x"}, headers=gym["headers"]
    )
    assert_error(r, 403)
    r = await client.post(
        "/v1/complaints",
        json={"merchant_id": gym["id"], "card_id": card["id"], "category": "other", "text": "not my card"},
        headers=han["headers"],
    )
    assert_error(r, 404, "card_not_found")
    r = await client.post(
        "/v1/complaints", json={"merchant_id": "mch_nope", "category": "other", "text": "x"}, headers=han["headers"]
    )
    assert_error(r, 404, "merchant_not_found")
    r = await client.post(
        "/v1/complaints", json={"merchant_id": gym["id"], "category": "rude", "text": "x"}, headers=han["headers"]
    )
    assert r.status_code == 422, r.text

    # Another merchant cannot see or answer it: 404, not 403.
    r = await client.post(f"/v1/complaints/{c['id']}/response", json={"text": "Not us."}, headers=other["headers"])
    assert_error(r, 404, "complaint_not_found")
    r = await client.get("/v1/complaints", headers=other["headers"])
    assert r.json()["items"] == []
    r = await client.post(f"/v1/complaints/{c['id']}/response", json={"text": "me"}, headers=li["headers"])
    assert_error(r, 403)

    r = await client.post(
        f"/v1/complaints/{c['id']}/response", json={"text": "Refund issued today."}, headers=gym["headers"]
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["response"]) == ("responded", "Refund issued today.")
    assert r.json()["responded_at"]
    r = await client.post(f"/v1/complaints/{c['id']}/response", json={"text": "again"}, headers=gym["headers"])
    assert_error(r, 409, "complaint_not_open")

    # The merchant may not resolve its own complaint; the regulator does.
    r = await client.post(
        f"/v1/complaints/{c['id']}/resolution", json={"resolution": "dismissed"}, headers=gym["headers"]
    )
    assert_error(r, 403)
    r = await client.post(
        f"/v1/complaints/{c['id']}/resolution",
        json={"resolution": "upheld", "note": "Refund was due."},
        headers=regulator["headers"],
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["resolution"], r.json()["resolution_note"]) == (
        "resolved",
        "upheld",
        "Refund was due.",
    )
    r = await client.post(
        f"/v1/complaints/{c['id']}/resolution", json={"resolution": "dismissed"}, headers=regulator["headers"]
    )
    assert_error(r, 409, "complaint_already_resolved")

    # The operator may resolve too, with each outcome; a made-up outcome is a 422.
    d = await file_complaint(client, han, gym, text="Too loud.")
    m = await file_complaint(client, han, other, text="Price changed.")
    r = await client.post(f"/v1/complaints/{d['id']}/resolution", json={"resolution": "dismissed"}, headers=OP)
    assert (r.status_code, r.json()["resolution"]) == (200, "dismissed")
    r = await client.post(
        f"/v1/complaints/{m['id']}/resolution", json={"resolution": "mediated"}, headers=regulator["headers"]
    )
    assert (r.status_code, r.json()["resolution"]) == (200, "mediated")
    r = await client.post(
        f"/v1/complaints/{m['id']}/resolution", json={"resolution": "forgiven"}, headers=regulator["headers"]
    )
    assert r.status_code == 422, r.text

    # Lists are scoped to the caller.
    mine = {x["id"] for x in (await client.get("/v1/complaints", headers=han["headers"])).json()["items"]}
    assert mine == {d["id"], m["id"]}
    gyms = {x["id"] for x in (await client.get("/v1/complaints", headers=gym["headers"])).json()["items"]}
    assert gyms == {c["id"], d["id"]}
    every = (await client.get("/v1/complaints", headers=regulator["headers"])).json()["items"]
    assert {x["id"] for x in every} == {c["id"], d["id"], m["id"]}
    r = await client.get("/v1/complaints", params={"merchant_id": other["id"]}, headers=regulator["headers"])
    assert [x["id"] for x in r.json()["items"]] == [m["id"]]


async def test_an_unanswered_complaint_goes_overdue_after_24_hours_and_turns_the_code_yellow(client):
    regulator = await create_regulator(client)
    gym = await create_merchant(client, "Iron Gym 铁馆健身", "fitness")
    li = await customer_of(client, gym)  # a customer's complaint counts (SPEC §3)
    c = await file_complaint(client, li, gym)

    await move_clock_to(client, parse_time(c["created_at"]) + timedelta(hours=23))
    h = await health(client, gym)
    assert (h["code"], h["indicators"]["overdue_complaints"]) == ("green", 0)

    await move_clock_to(client, parse_time(c["created_at"]) + timedelta(hours=24, minutes=1))
    h = await health(client, gym)
    assert h["new_merchant"] is True  # one card sold: only count signals are judged, and this one is
    assert (h["code"], h["indicators"]["overdue_complaints"]) == ("yellow", 1)
    assert h["reasons"] == [{"indicator": "overdue_complaints", "value": 1, "threshold": 1, "level": "yellow"}]
    [listed] = (await client.get("/v1/complaints", headers=regulator["headers"])).json()["items"]
    assert listed["overdue"] is True
    overdue, alert = await all_alerts(client, regulator, gym)  # the regulatory act itself, then its code change
    assert (overdue["kind"], overdue["from_code"], overdue["to_code"]) == ("complaint_overdue", None, None)
    assert (alert["from_code"], alert["to_code"], alert["reasons"]) == ("green", "yellow", h["reasons"])

    # A late answer still counts: the complaint is no longer overdue and the code goes back to green.
    r = await client.post(
        f"/v1/complaints/{c['id']}/response", json={"text": "Sorry, we were closed."}, headers=gym["headers"]
    )
    assert r.status_code == 200 and r.json()["overdue"] is False
    h = await health(client, gym)
    assert (h["code"], h["indicators"]["overdue_complaints"]) == ("green", 0)


async def test_complaint_counts_judge_a_merchant_too_new_for_rates(client):
    # A merchant stays new until it has sold min_cards cards; complainants must hold one, so the
    # operator raises min_cards above the twenty customers this story needs.
    await put_policy(client, {"min_cards": 50})
    salon = await create_merchant(client, "Jade Salon 玉美发", "beauty")
    consumers = [await customer_of(client, salon, f"Consumer {i}") for i in range(20)]
    for i, who in enumerate(consumers[:4]):
        await file_complaint(client, who, salon, text=f"complaint {i}")
    assert (await health(client, salon))["code"] == "green"
    await file_complaint(client, consumers[4], salon, text="the fifth")
    h = await health(client, salon)
    assert (h["code"], h["new_merchant"]) == ("yellow", True)
    assert h["reasons"] == [{"indicator": "complaints", "value": 5, "threshold": 5, "level": "yellow"}]
    for i in range(15):  # the same five again: each consumer counts once
        await file_complaint(client, consumers[i % 5], salon, text=f"more {i}")
    h = await health(client, salon)
    assert (h["code"], h["indicators"]["complaints"], h["indicators"]["complaints_filed"]) == ("yellow", 5, 20)
    for i, who in enumerate(consumers[5:]):  # fifteen more customers: twenty consumers complain
        await file_complaint(client, who, salon, text=f"another customer {i}")
    h = await health(client, salon)
    assert h["code"] == "red" and h["warning"] is not None
    assert h["reasons"] == [{"indicator": "complaints", "value": 20, "threshold": 20, "level": "red"}]
