"""The operator's versioned risk policy, and the random inspection draw (双随机、一公开)."""

from __future__ import annotations

from api_tests.factories import (
    OP,
    assert_error,
    buy_card,
    create_merchant,
    create_regulator,
    file_complaint,
    health,
    publish_stored_value,
    put_policy,
    refund,
    register_consumer,
)
from risk import DEFAULT_POLICY


async def test_operator_changes_the_policy_and_every_code_follows_the_new_version(client):
    regulator = await create_regulator(client)
    r = await client.get("/v1/risk/policy", headers=regulator["headers"])
    assert r.status_code == 200 and r.json() == DEFAULT_POLICY.to_dict()

    # A shop with ten cards and one refund: 1,000 bp of refunds, green under the defaults.
    shop = await create_merchant(client)
    product = await publish_stored_value(client, shop, price=10_000, face_value=10_000)
    consumers = [await register_consumer(client, f"C{i}") for i in range(10)]
    cards = [await buy_card(client, c, product) for c in consumers]
    await refund(client, consumers[0], cards[0])
    h = await health(client, shop)
    assert (h["code"], h["policy_version"], h["indicators"]["refund_rate_bp"]) == ("green", 1, 1_000)

    # Only what changes is sent; the version is bumped by the service, whatever the body says.
    # (One consumer's refund is judged only once the operator lowers min_refund_consumers to one.)
    new = await put_policy(client, {"version": 99, "refund_rate": {"yellow": 1_000}, "min_refund_consumers": 1})
    assert new["version"] == 2 and new["refund_rate"] == {"yellow": 1_000, "red": 3_000}
    assert new["min_refund_consumers"] == 1
    changed = ("version", "refund_rate", "min_refund_consumers")
    assert {k: v for k, v in new.items() if k not in changed} == {
        k: v for k, v in DEFAULT_POLICY.to_dict().items() if k not in changed
    }
    assert (await client.get("/v1/risk/policy", headers=OP)).json() == new
    h = await health(client, shop)
    assert (h["code"], h["policy_version"]) == ("yellow", 2)
    assert h["reasons"] == [{"indicator": "refund_rate_bp", "value": 1_000, "threshold": 1_000, "level": "yellow"}]

    # A policy that cannot be used is refused whole, with the error body naming the field.
    for bad, field in (
        ({"refund_rate": {"yellow": 5_000}}, "refund_rate"),
        ({"complaints": {"red": 0}}, "complaints.red"),
        ({"min_cards": 2.5}, "min_cards"),
        ({"refund_rat": {"red": 1}}, "refund_rat"),
        ({"min_rejection_consumers": 0}, "min_rejection_consumers"),
        ({"complaint_needs_card": "yes"}, "complaint_needs_card"),
        ({"inspection_ratios": {"green": 5_000, "yellow": 1_000}}, "inspection_ratios"),
    ):
        r = await client.put("/v1/risk/policy", json=bad, headers=OP)
        error = assert_error(r, 422, "invalid_policy")
        assert field in error["message"], (bad, error)
    assert (await client.get("/v1/risk/policy", headers=OP)).json()["version"] == 2

    # Regulators read the policy but do not set it; consumers do neither; nobody anonymous.
    assert_error(await client.put("/v1/risk/policy", json={"min_cards": 5}, headers=regulator["headers"]), 403)
    assert_error(await client.get("/v1/risk/policy", headers=consumers[1]["headers"]), 403)
    assert_error(await client.get("/v1/risk/policy"), 401)

    # Back to the default line: the code follows, under version 3.
    third = await put_policy(client, {"refund_rate": {"yellow": 1_500}})
    assert third["version"] == 3
    h = await health(client, shop)
    assert (h["code"], h["policy_version"], h["reasons"]) == ("green", 3, [])


async def test_inspection_draw_repeats_with_its_seed_and_always_takes_red_merchants(client):
    regulator = await create_regulator(client)
    greens = [await create_merchant(client, f"Green shop {i}") for i in range(6)]
    bad = await create_merchant(client, "Runaway Salon 跑路美发", "beauty")
    # A stricter complaint count (red at 2) makes the salon red with two of its customers' complaints.
    await put_policy(client, {"complaints": {"yellow": 1, "red": 2}})
    product = await publish_stored_value(client, bad, price=10_000, face_value=10_000)
    consumer, other = await register_consumer(client), await register_consumer(client, "Han Meimei 韩梅梅")
    for who in (consumer, other):
        await buy_card(client, who, product)
        await file_complaint(client, who, bad, text="closed")
    assert (await health(client, bad))["code"] == "red"

    body = {"inspectors": ["inspector-wang", "inspector-zhao"], "seed": "2026-03-15 lottery 07 19 23"}
    r1 = await client.post("/v1/inspections/draws", json=body, headers=regulator["headers"])
    r2 = await client.post("/v1/inspections/draws", json=body, headers=regulator["headers"])
    assert r1.status_code == r2.status_code == 201, r1.text
    d1, d2 = r1.json(), r2.json()
    assert d1["id"] != d2["id"] and d1["seed"] == body["seed"]
    assert d1["inspections"] == d2["inspections"]
    drawn = [i["merchant_id"] for i in d1["inspections"]]
    assert drawn[0] == bad["id"]  # red first, and red always (100%)
    assert len(drawn) == 2  # ceil(3% of 6 greens) = 1 green
    assert drawn[1] in {g["id"] for g in greens}
    assert {i["inspector"] for i in d1["inspections"]} <= set(body["inspectors"])
    assert {p["merchant_id"]: p["code"] for p in d1["population"]}[bad["id"]] == "red"

    # Anyone can repeat the draw from the published seed and population.
    from risk import Policy, draw_inspections

    policy = Policy.from_dict((await client.get("/v1/risk/policy", headers=OP)).json())
    again = draw_inspections(
        [(p["merchant_id"], p["code"]) for p in d1["population"]], d1["inspectors"], policy, d1["seed"]
    )
    assert [{"merchant_id": m, "inspector": i} for m, i in again] == d1["inspections"]
    r = await client.get(f"/v1/inspections/draws/{d1['id']}")
    assert r.status_code == 200 and r.json()["inspections"] == d1["inspections"]

    # A draw without a seed gets a fresh one; only regulators and the operator draw.
    r = await client.post("/v1/inspections/draws", json={"inspectors": ["inspector-li"]}, headers=regulator["headers"])
    assert r.status_code == 201 and r.json()["seed"] and r.json()["seed"] != body["seed"]
    assert_error(await client.post("/v1/inspections/draws", json=body, headers=consumer["headers"]), 403)
    assert_error(await client.post("/v1/inspections/draws", json={"inspectors": []}, headers=regulator["headers"]), 422)
