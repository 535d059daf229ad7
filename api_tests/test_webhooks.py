"""Webhooks (SPEC §9) to a real receiver on loopback: Standard Webhooks signatures that the
`standardwebhooks` library verifies, retries with the same webhook-id, the delivery log, secret
rotation, the owner's scope, and the SSRF guard in production settings."""

from __future__ import annotations

import socket
from collections import Counter
from datetime import timedelta

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from api_tests.factories import (
    answer,
    ask,
    assert_error,
    buy_card,
    create_auditor,
    create_merchant,
    create_regulator,
    move_clock_to,
    parse_time,
    publish_count,
    refund,
    register_consumer,
)
from api_tests.webhook_receiver import Receiver
from service.webhooks import ssrf
from service.webhooks.dispatcher import Dispatcher

FAST = [0.05, 0.05, 0.05, 0.05]  # seconds between attempts


async def register(client, party: dict, url: str, types=("*",), expect: int = 201) -> dict:
    r = await client.post(
        "/v1/webhook-endpoints", json={"url": url, "event_types": list(types)}, headers=party["headers"]
    )
    assert r.status_code == expect, r.text
    return r.json()


async def deliver(ctx, **overrides) -> Dispatcher:
    dispatcher = Dispatcher(ctx, schedule=overrides.pop("schedule", FAST), **overrides)
    try:
        await dispatcher.drain(timeout=30)
    finally:
        await dispatcher.close()
    return dispatcher


def verified(received, secret: str) -> dict:
    """The payload, after the standardwebhooks library checked its signature (raises if it does not match)."""
    return Webhook(secret).verify(received.body, received.headers)


async def test_a_merchants_endpoint_gets_its_own_money_events_and_never_anothers(client, ctx):
    gym, spa = await create_merchant(client, "Iron Gym"), await create_merchant(client, "Calm Spa")
    li, wang = await register_consumer(client, "Li Lei"), await register_consumer(client, "Wang Wu")
    with Receiver() as receiver, Receiver() as spa_receiver:
        endpoint = await register(client, gym, receiver.url)
        assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
        await register(client, spa, spa_receiver.url, types=["redemption.requested"])
        card = await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
        hold = await ask(client, gym, card, uses=1)
        await answer(client, li, hold, "confirm")
        await refund(client, li, card)
        other = await buy_card(client, wang, await publish_count(client, spa, 20_000, 5))
        spa_hold = await ask(client, spa, other, uses=1)
        await deliver(ctx)

        payloads = [verified(x, endpoint["secret"]) for x in receiver.received]
        assert Counter(p["type"] for p in payloads) == Counter(
            ["card.purchased", "redemption.requested", "redemption.confirmed", "card.refunded"]
        )
        assert {p["data"].get("merchant_id") for p in payloads} == {gym["id"]}
        assert all(x.headers["webhook-id"] == p["id"] for x, p in zip(receiver.received, payloads))
        assert "Li Lei" not in str(payloads) and li["phone"] not in str(payloads)
        # The same event as GET /v1/events shows it.
        feed = {e["id"]: e for e in (await client.get("/v1/events", headers=gym["headers"])).json()["items"]}
        for p in payloads:
            assert {k: v for k, v in feed[p["id"]].items() if k != "cursor"} == p
        # The other merchant's endpoint got only what it asked for, of its own.
        [only] = spa_receiver.received
        assert orjson.loads(only.body)["data"]["id"] == spa_hold["id"]
        # Nothing is sent twice in the normal case.
        assert len(receiver.received) == 4
        await deliver(ctx)
        assert len(receiver.received) == 4


async def test_a_receiver_failing_twice_gets_the_same_webhook_id_until_it_answers_2xx(client, ctx):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    with Receiver(statuses=[500, 500]) as receiver:
        endpoint = await register(client, gym, receiver.url, types=["card.purchased"])
        await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
        await deliver(ctx)
        assert [x.status for x in receiver.received] == [500, 500, 200]
        assert len({x.headers["webhook-id"] for x in receiver.received}) == 1
        assert len({x.body for x in receiver.received}) == 1
        for x in receiver.received:
            verified(x, endpoint["secret"])

    r = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=gym["headers"])
    assert r.status_code == 200, r.text
    [delivery] = r.json()["items"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("delivered", 3, 200)
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    assert [a["error"] for a in delivery["attempt_log"]] == ["HTTP 500", "HTTP 500", None]
    assert all(a["duration_ms"] >= 0 for a in delivery["attempt_log"])
    assert delivery["event_id"] == receiver.received[0].headers["webhook-id"]

    # A manual retry sends it once more, with the same id.
    with Receiver() as again:
        r = await client.post(
            "/v1/webhook-endpoints", json={"url": again.url, "event_types": ["*"]}, headers=gym["headers"]
        )
        r = await client.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry", headers=gym["headers"]
        )
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "pending"
    with Receiver() as receiver2:
        # the endpoint still points at the first receiver's (closed) port: the retry fails and is logged
        await deliver(ctx, schedule=[])
    log = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=gym["headers"])).json()[
        "items"
    ][0]
    assert log["attempts"] == 4 and log["status"] == "failed" and log["attempt_log"][-1]["status_code"] is None
    assert log["attempt_log"][-1]["error"]
    assert receiver2.received == []


async def test_after_a_secret_rotation_deliveries_verify_with_the_old_and_the_new_secret(client, ctx):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    product = await publish_count(client, gym, 10_000, 10)
    with Receiver() as receiver:
        endpoint = await register(client, gym, receiver.url, types=["card.purchased"])
        await buy_card(client, li, product)
        await deliver(ctx)
        r = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=gym["headers"])
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != endpoint["secret"]
        assert rotated["previous_secret_expires_at"] is not None
        await buy_card(client, li, product)
        await deliver(ctx)
        before, after = receiver.received
        verified(before, endpoint["secret"])
        with pytest.raises(Exception):
            verified(before, rotated["secret"])
        assert len(after.headers["webhook-signature"].split(" ")) == 2
        assert verified(after, endpoint["secret"]) == verified(after, rotated["secret"])
        # The secret is shown only at creation and rotation.
        r = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=gym["headers"])
        assert "secret" not in r.json()


async def test_endpoints_are_their_owners_alone(client, ctx):
    gym, spa = await create_merchant(client), await create_merchant(client)
    li = await register_consumer(client)
    regulator = await create_regulator(client)
    with Receiver() as receiver:
        endpoint = await register(client, gym, receiver.url)
        path = f"/v1/webhook-endpoints/{endpoint['id']}"
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/rotate-secret"), ("GET", "/deliveries")):
            assert_error(
                await client.request(method, path + suffix, headers=spa["headers"]), 404, "webhook_endpoint_not_found"
            )
            assert_error(await client.request(method, path + suffix, headers=regulator["headers"]), 404)
            assert_error(await client.request(method, path + suffix, headers=li["headers"]), 403)
        assert (await client.get("/v1/webhook-endpoints", headers=spa["headers"])).json()["items"] == []
        [listed] = (await client.get("/v1/webhook-endpoints", headers=gym["headers"])).json()["items"]
        assert listed["id"] == endpoint["id"] and "secret" not in listed
        r = await register(client, gym, receiver.url, types=["card.stolen"], expect=422)
        assert r["error"]["code"] == "unknown_event_type"
        # A regulator's endpoint gets every merchant's events.
        watch = await register(client, regulator, receiver.url, types=["card.purchased"])
        await buy_card(client, li, await publish_count(client, spa, 10_000, 10))
        await deliver(ctx)
        [got] = receiver.received
        assert verified(got, watch["secret"])["data"]["merchant_id"] == spa["id"]
        r = await client.delete(path, headers=gym["headers"])
        assert r.status_code == 200 and r.json() == {"id": endpoint["id"], "deleted": True}
        assert_error(await client.get(path, headers=gym["headers"]), 404)


async def fail_for_five_days(client, ctx, owner: dict, seller: dict | None = None) -> dict:
    """`owner`'s endpoint for card.purchased answers 503 to a sale now and to another 5 days and an hour
    later (no retries in between) of `seller`'s; returns the endpoint, which is disabled by then."""
    seller = seller or await create_merchant(client, "Sold Gym")
    li = await register_consumer(client)
    product = await publish_count(client, seller, 10_000, 10)
    with Receiver(statuses=[503] * 10) as receiver:
        endpoint = await register(client, owner, receiver.url, types=["card.purchased"])
        card = await buy_card(client, li, product)
        await deliver(ctx, schedule=[])
        assert len(receiver.received) == 1
        await move_clock_to(client, parse_time(card["purchased_at"]) + timedelta(days=5, hours=1))
        await buy_card(client, li, product)
        await deliver(ctx, schedule=[])
        assert len(receiver.received) == 2
    r = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=owner["headers"])
    assert r.json()["status"] == "disabled"
    return endpoint


async def disabled_events(client, party: dict) -> list[str]:
    """The ids of the disabled endpoints `party` was told of."""
    r = await client.get("/v1/events", params={"types": "webhook_endpoint.disabled"}, headers=party["headers"])
    return [e["data"]["id"] for e in r.json()["items"]]


async def test_an_endpoint_failing_for_five_days_is_disabled_and_its_owner_told(client, ctx):
    gym = await create_merchant(client)
    endpoint = await fail_for_five_days(client, ctx, gym, seller=gym)
    assert await disabled_events(client, gym) == [endpoint["id"]]


async def test_an_auditors_endpoint_disabled_is_told_to_that_auditor_only(client, ctx):
    bank, other_bank = await create_auditor(client), await create_auditor(client, "Other Bank")
    gym = await create_merchant(client)
    endpoint = await fail_for_five_days(client, ctx, bank, seller=gym)
    assert await disabled_events(client, bank) == [endpoint["id"]]
    assert await disabled_events(client, other_bank) == [] and await disabled_events(client, gym) == []


async def test_the_ssrf_guard_refuses_inside_addresses_in_production(client, ctx, monkeypatch):
    for url in (
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/",
        "https://10.0.0.8/x",
        "https://[fd00::1]/",
        "https://100.64.0.1/",
        "https://localhost/hooks",
        "http://example.com/hooks",
        "https://user:pw@example.com/",
        "ftp://example.com/",
    ):
        with pytest.raises(ssrf.Refused):
            await ssrf.check(url, allow_private=False)

    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):  # a public-looking name that resolves to loopback
        if host == "hooks.example.com":
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(ssrf.Refused):
        await ssrf.check("https://hooks.example.com/in", allow_private=False)

    gym = await create_merchant(client)
    monkeypatch.setattr(ctx.settings, "webhook_allow_private", False)  # as in production
    for url in ("https://169.254.169.254/latest/meta-data/", "https://hooks.example.com/in"):
        r = await register(client, gym, url, expect=422)
        assert r["error"]["code"] == "webhook_url_refused"
    monkeypatch.setattr(ctx.settings, "webhook_allow_private", None)

    # Registered while the name was harmless, it points inside at delivery time: refused again, nothing sent.
    li = await register_consumer(client)
    with Receiver() as receiver:
        endpoint = await register(client, gym, receiver.url.replace("http://127.0.0.1", "https://hooks.example.com"))
        await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
        await deliver(ctx, schedule=[], allow_private=False)
        assert receiver.received == []
    [delivery] = (
        await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=gym["headers"])
    ).json()["items"]
    assert delivery["status"] == "failed" and "not public" in delivery["attempt_log"][0]["error"]


async def test_a_replayed_create_or_rotation_gives_the_same_secret_which_is_never_stored_in_the_clear(client, ctx):
    gym = await create_merchant(client)
    with Receiver() as receiver:
        body = {"url": receiver.url, "event_types": ["card.purchased"]}
        headers = {**gym["headers"], "Idempotency-Key": "create-hook-1"}
        first = await client.post("/v1/webhook-endpoints", json=body, headers=headers)
        again = await client.post("/v1/webhook-endpoints", json=body, headers=headers)
        assert first.status_code == again.status_code == 201
        assert first.json()["secret"].startswith("whsec_") and again.json() == first.json()
        assert len((await client.get("/v1/webhook-endpoints", headers=gym["headers"])).json()["items"]) == 1
        path = f"/v1/webhook-endpoints/{first.json()['id']}/rotate-secret"
        headers = {**gym["headers"], "Idempotency-Key": "rotate-hook-1"}
        rotated = await client.post(path, headers=headers)
        rotated_again = await client.post(path, headers=headers)
        assert rotated.status_code == rotated_again.status_code == 200
        assert rotated.json()["secret"] not in ("", first.json()["secret"])
        assert rotated_again.json()["secret"] == rotated.json()["secret"]
        async with ctx.engines.reader.connect() as conn:
            stored = (await conn.exec_driver_sql("SELECT key, response_body FROM idempotency_keys")).all()
        kept = {k: b for k, b in stored if k in ("create-hook-1", "rotate-hook-1")}
        assert len(kept) == 2, stored
        assert not any("whsec_" in b for _, b in stored), kept
        for b in kept.values():
            assert first.json()["secret"][6:] not in b and rotated.json()["secret"][6:] not in b
