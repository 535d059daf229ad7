"""Credit recommendation over HTTP (信用推介, SPEC §12): lenders see a merchant only while it consents,
never a consumer, and nothing else of the service."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from api_tests.factories import (
    OP,
    assert_error,
    bearer,
    buy_card,
    create_merchant,
    ledger_entries,
    move_clock_to,
    publish_stored_value,
    redeem,
    register_consumer,
)


async def create_lender(client, name: str = "Industrial Bank loans 兴业银行信贷部") -> dict:
    r = await client.post("/v1/lenders", json={"name": name}, headers=OP)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["api_key"].startswith("ln_") and body["role"] == "lender"
    return {**body, "headers": bearer(body["api_key"])}


async def consent(client, merchant: dict, value: bool) -> dict:
    r = await client.post("/v1/merchants/me/credit-consent", json={"consent": value}, headers=merchant["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_lender_sees_a_merchant_only_while_it_consents(client):
    lender = await create_lender(client)
    gym = await create_merchant(client, "Iron Gym 铁馆健身")
    shy = await create_merchant(client, "Shy Spa 害羞水疗", "beauty")
    li = await register_consumer(client, "Li Lei 李雷")
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=100_000, face_value=120_000))
    await redeem(client, gym, li, card, amount=12_000)

    r = await client.get("/v1/credit/merchants", headers=lender["headers"])
    assert r.status_code == 200 and r.json()["items"] == []
    for m in (gym, shy):
        assert_error(await client.get(f"/v1/credit/merchants/{m['id']}", headers=lender["headers"]), 404)

    given = await consent(client, gym, True)
    assert given["consent"] is True
    r = await client.get("/v1/credit/merchants", headers=lender["headers"])
    items = r.json()["items"]
    assert [x["merchant_id"] for x in items] == [gym["id"]]
    report = items[0]
    assert report["months_on_platform"] == 0 and report["code_history"]["months"][-1]["code"] == "green"
    assert report["monthly"][-1]["released"] == 10_000 and report["monthly"][-1]["issued"] == 100_000
    assert report["recommendation"]["recommended"] is False
    assert any(x.startswith("not met: 0 whole months") for x in report["recommendation"]["reasons"])
    r = await client.get(f"/v1/credit/merchants/{gym['id']}", headers=lender["headers"])
    assert r.status_code == 200 and r.json()["merchant_id"] == gym["id"]
    text = r.text
    assert li["id"] not in text and "cns_" not in text and "Li Lei" not in text and card["id"] not in text
    assert_error(await client.get(f"/v1/credit/merchants/{shy['id']}", headers=lender["headers"]), 404)

    assert (await consent(client, gym, True))["ledger_seq"] == given["ledger_seq"]  # no change, no entry
    await consent(client, gym, False)
    assert_error(await client.get(f"/v1/credit/merchants/{gym['id']}", headers=lender["headers"]), 404)
    r = await client.get("/v1/credit/merchants", headers=lender["headers"])
    assert r.json()["items"] == []
    kinds = [
        (e["kind"], orjson.loads(e["canonical"]).get("consent"))
        for e in await ledger_entries(client)
        if e["kind"] == "credit_consent"
    ]
    assert kinds == [("credit_consent", True), ("credit_consent", False)]


async def test_a_lender_may_do_nothing_else(client):
    lender = await create_lender(client)
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=1_000, face_value=1_000))
    for method, path in (
        ("GET", "/v1/ping"),
        ("GET", f"/v1/cards/{card['id']}"),
        ("GET", "/v1/ledger/entries"),
        ("GET", "/v1/settlements"),
        ("GET", "/v1/consumers/me"),
        ("GET", "/v1/merchants/me"),
        ("GET", "/v1/alerts"),
        ("GET", "/v1/escrow/reconciliation"),
        ("GET", "/v1/complaints"),
    ):
        assert_error(await client.request(method, path, headers=lender["headers"]), 403, "role_not_allowed")
    r = await client.post("/v1/merchants/me/credit-consent", json={"consent": True}, headers=lender["headers"])
    assert_error(r, 403)
    # a withdrawal with nothing given is a no-op, not an error
    r = await client.post("/v1/merchants/me/credit-consent", json={"consent": False}, headers=gym["headers"])
    assert r.status_code == 200 and r.json()["ledger_seq"] is None


async def test_six_green_months_with_volume_are_recommended(client):
    """A merchant that sells and serves 12,000 yuan of consumption a month, stays green: recommended
    after six whole months; the reasons say why."""
    start = datetime(2027, 1, 2, 4, tzinfo=UTC)
    await move_clock_to(client, start)
    lender = await create_lender(client)
    gym = await create_merchant(client, "Steady Gym 稳健健身")
    product = await publish_stored_value(client, gym, price=400_000, face_value=400_000, valid_days=3650)
    consumers = [await register_consumer(client, f"Member {i}") for i in range(3)]
    await consent(client, gym, True)
    for month in range(1, 8):  # Jan..Jul 2027, steady sales (a burst would be an issuance surge: yellow)
        for i, c in enumerate(consumers):
            await move_clock_to(client, datetime(2027, month, 3 + 9 * i, 4, tzinfo=UTC))
            card = await buy_card(client, c, product)
            await redeem(client, gym, c, card, amount=400_000)
    await move_clock_to(client, datetime(2027, 8, 3, 4, tzinfo=UTC))
    r = await client.get(f"/v1/credit/merchants/{gym['id']}", headers=lender["headers"])
    report = r.json()
    assert report["months_on_platform"] == 7
    assert report["code_history"]["green"] == 7 and report["code_history"]["red"] == 0
    assert [m["released"] for m in report["monthly"][:7]] == [1_200_000] * 7
    verdict = report["recommendation"]
    assert verdict["recommended"] is True, verdict
    assert verdict["policy_version"] == 1 and all(x.startswith("met: ") for x in verdict["reasons"])
