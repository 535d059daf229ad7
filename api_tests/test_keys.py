"""The operator rotates and revokes merchants', regulators' and auditors' API keys (SPEC §8); an ended
key is 401 at once, on every replica."""

from __future__ import annotations

from datetime import timedelta

from api_tests.factories import (
    OP,
    assert_error,
    bearer,
    create_auditor,
    create_merchant,
    create_regulator,
    move_clock_to,
    parse_time,
    register_consumer,
)
from api_tests.test_phone_verification import second_instance

ME = {"merchant": "/v1/merchants/me", "regulator": "/v1/alerts", "auditor": "/v1/escrow/reconciliation"}


async def rotate(client, party_id: str, body: dict | None = None, expect: int = 201) -> dict:
    r = await client.post(f"/v1/keys/{party_id}/rotate", json=body, headers=OP)
    assert r.status_code == expect, r.text
    return r.json()


async def test_rotation_without_grace_ends_the_old_key_at_once(client):
    for party, role in (
        (await create_merchant(client), "merchant"),
        (await create_regulator(client), "regulator"),
        (await create_auditor(client), "auditor"),
    ):
        assert (await client.get(ME[role], headers=party["headers"])).status_code == 200  # cached
        new = await rotate(client, party["id"])
        assert new["party_id"] == party["id"] and new["role"] == role and new["old_keys"] == 1
        assert new["api_key"].startswith(party["api_key"][:3]) and new["api_key"] != party["api_key"]
        assert_error(await client.get(ME[role], headers=party["headers"]), 401, "bad_token")
        assert (await client.get(ME[role], headers=bearer(new["api_key"]))).status_code == 200


async def test_rotation_with_grace_keeps_the_old_key_until_the_grace_ends(client):
    gym = await create_merchant(client)
    new = await rotate(client, gym["id"], {"grace_seconds": 600})
    until = parse_time(new["old_keys_expire_at"])
    for key in (gym["api_key"], new["api_key"]):
        assert (await client.get("/v1/merchants/me", headers=bearer(key))).status_code == 200
    await move_clock_to(client, until - timedelta(seconds=5))
    assert (await client.get("/v1/merchants/me", headers=gym["headers"])).status_code == 200
    await move_clock_to(client, until + timedelta(seconds=1))
    assert_error(await client.get("/v1/merchants/me", headers=gym["headers"]), 401, "bad_token")
    assert (await client.get("/v1/merchants/me", headers=bearer(new["api_key"]))).status_code == 200
    # a second rotation never lengthens a grace already running, and ends the first new key at once
    newer = await rotate(client, gym["id"])
    assert_error(await client.get("/v1/merchants/me", headers=bearer(new["api_key"])), 401)
    assert (await client.get("/v1/merchants/me", headers=bearer(newer["api_key"]))).status_code == 200


async def test_a_revoked_key_is_401_at_once_on_another_replica(client, data_dir):
    gym = await create_merchant(client)
    auditor = await create_auditor(client)
    async with second_instance(data_dir) as replica:
        assert (await replica.get("/v1/merchants/me", headers=gym["headers"])).status_code == 200  # cached there
        assert (await replica.get(ME["auditor"], headers=auditor["headers"])).status_code == 200
        r = await client.post(f"/v1/keys/{gym['id']}/revoke", headers=OP)
        assert r.status_code == 200 and r.json()["revoked"] == 1 and r.json()["role"] == "merchant", r.text
        assert_error(await replica.get("/v1/merchants/me", headers=gym["headers"]), 401, "bad_token")
        assert_error(
            await replica.post(
                "/v1/products",
                json={"type": "count", "name": "x", "price": 100, "uses": 1, "valid_days": 9},
                headers=gym["headers"],
            ),
            401,
        )
        assert (await replica.get(ME["auditor"], headers=auditor["headers"])).status_code == 200  # others unaffected
        # and a rotation on the replica is seen here
        new = await rotate(replica, auditor["id"])
        assert_error(await client.get(ME["auditor"], headers=auditor["headers"]), 401)
        assert (await client.get(ME["auditor"], headers=bearer(new["api_key"]))).status_code == 200
    # a revoked merchant is issued a key again by rotating
    again = await rotate(client, gym["id"])
    assert again["old_keys"] == 0
    assert (await client.get("/v1/merchants/me", headers=bearer(again["api_key"]))).status_code == 200


async def test_keys_of_an_unknown_party_or_a_consumer_are_404(client):
    li = await register_consumer(client)
    for party_id in ("mch_nobody", li["id"], "operator"):
        for action in ("rotate", "revoke"):
            assert_error(await client.post(f"/v1/keys/{party_id}/{action}", headers=OP), 404, "party_not_found")
    assert (await client.get("/v1/consumers/me", headers=li["headers"])).status_code == 200


async def test_only_the_operator_rotates_or_revokes(client):
    gym = await create_merchant(client)
    regulator = await create_regulator(client)
    for headers in (gym["headers"], regulator["headers"]):
        for action in ("rotate", "revoke"):
            assert_error(await client.post(f"/v1/keys/{gym['id']}/{action}", headers=headers), 403, "role_not_allowed")
    assert (await client.get("/v1/merchants/me", headers=gym["headers"])).status_code == 200
    for bad in ({"grace_seconds": -1}, {"grace_seconds": 10**9}, {"grace_seconds": "soon"}, {"other": 1}):
        assert_error(await client.post(f"/v1/keys/{gym['id']}/rotate", json=bad, headers=OP), 422)
