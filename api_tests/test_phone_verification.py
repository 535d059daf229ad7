"""Phone verification, sign-in and sign-out (SPEC §8), and the attacks of issue 12 on them: the
address limit and X-Forwarded-For (finding 3), phone enumeration (4), anonymous replays handing out a
token (5), an IPv6 caller overflowing the idempotency table (11).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from api_tests.conftest import OPERATOR_TOKEN, _test_settings
from api_tests.factories import (
    OP,
    assert_error,
    bearer,
    buy_card,
    client_at,
    create_merchant,
    latest_code,
    move_clock_to,
    parse_time,
    publish_stored_value,
    register_consumer,
    sign_in,
    verify_phone,
)
from service.app import asgi_app, build_context, create_app
from service.core.settings import Settings
from service.db.models import metadata


def new_phone() -> str:
    return "15" + "".join(secrets.choice("0123456789") for _ in range(9))


async def at_top_of_a_minute(client) -> datetime:
    """Move the test clock to the start of a minute: the limit's one-minute window then holds a whole test."""
    start = (datetime.now(UTC) + timedelta(minutes=2)).replace(second=0, microsecond=0)
    await move_clock_to(client, start)
    return start


@contextlib.asynccontextmanager
async def second_instance(data_dir, peer: str = "10.9.0.2"):
    """Another replica of the service: its own app, caches and writer, on the same database."""
    other = build_context(_test_settings(data_dir))
    async with other.engines.reader.connect() as conn:
        await other.clock.refresh(conn)
    transport = httpx.ASGITransport(app=asgi_app(create_app(ctx=other)), client=(peer, 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://escrow.test") as c:
            yield c
    finally:
        await other.writer.stop()
        if "epoch_watch" in other.extras:
            other.extras["epoch_watch"].close()
        await other.engines.dispose()


async def register(c, phone: str, name: str = "Wang Wu 王五", reader=None, headers=None) -> httpx.Response:
    vid, code = await verify_phone(c, phone, reader=reader)
    return await c.post(
        "/v1/consumers", json={"name": name, "phone": phone, "verification_id": vid, "code": code}, headers=headers
    )


# ---- finding 3: the address limit cannot be lifted ---------------------------------------------------------


async def test_rotating_x_forwarded_for_from_the_socket_peer_does_not_lift_the_limit(client, ctx):
    limit = ctx.settings.registration_limit_per_minute
    await at_top_of_a_minute(client)
    async with client_at(client._transport.app, "198.51.100.20") as attacker:
        for i in range(limit):
            r = await attacker.post(
                "/v1/consumers/verifications",
                json={"phone": new_phone()},
                headers={"X-Forwarded-For": f"203.0.{i // 256}.{i % 256}"},
            )
            assert r.status_code == 202, f"attempt {i + 1}: {r.text}"
        for spoofed in ("127.0.0.1", "10.0.0.1", "2001:db8::1", "198.51.100.21"):
            r = await attacker.post(
                "/v1/consumers/verifications", json={"phone": new_phone()}, headers={"X-Forwarded-For": spoofed}
            )
            assert_error(r, 429, "rate_limited")


async def test_behind_a_trusted_proxy_the_forwarded_client_is_limited_and_the_others_are_not(client, ctx):
    from service.http.client_address import parse_networks

    limit = ctx.settings.registration_limit_per_minute
    await at_top_of_a_minute(client)
    ctx.extras["trusted_proxies"] = parse_networks("192.0.2.10, 10.200.0.0/16")
    try:
        async with client_at(client._transport.app, "192.0.2.10") as proxy:
            for i in range(limit):
                # what the client wrote on the left proves nothing: the proxy appended the real address
                r = await proxy.post(
                    "/v1/consumers/verifications",
                    json={"phone": new_phone()},
                    headers={"X-Forwarded-For": f"1.1.{i}.1, 203.0.113.9"},
                )
                assert r.status_code == 202, f"attempt {i + 1}: {r.text}"
            assert_error(
                await proxy.post(
                    "/v1/consumers/verifications",
                    json={"phone": new_phone()},
                    headers={"X-Forwarded-For": "203.0.113.9"},
                ),
                429,
                "rate_limited",
            )
            # through a second trusted hop, the same client is the same client
            assert_error(
                await proxy.post(
                    "/v1/consumers/verifications",
                    json={"phone": new_phone()},
                    headers={"X-Forwarded-For": "203.0.113.9, 10.200.3.4"},
                ),
                429,
                "rate_limited",
            )
            for other in ("203.0.113.10", "2001:db8:77::5"):
                r = await proxy.post(
                    "/v1/consumers/verifications", json={"phone": new_phone()}, headers={"X-Forwarded-For": other}
                )
                assert r.status_code == 202, r.text
    finally:
        ctx.extras.pop("trusted_proxies")


async def test_two_ipv6_addresses_in_one_64_share_a_limit(client, ctx):
    limit = ctx.settings.registration_limit_per_minute
    await at_top_of_a_minute(client)
    app = client._transport.app
    async with client_at(app, "2001:db8:1:2::1") as first, client_at(app, "2001:db8:1:2:ffff:ee:dd:9") as second:
        for i in range(limit):
            r = await (first if i % 2 else second).post("/v1/consumers/verifications", json={"phone": new_phone()})
            assert r.status_code == 202, f"attempt {i + 1}: {r.text}"
        for c in (first, second):
            assert_error(await c.post("/v1/consumers/verifications", json={"phone": new_phone()}), 429, "rate_limited")
    async with client_at(app, "2001:db8:1:3::1") as next_block:
        assert (await next_block.post("/v1/consumers/verifications", json={"phone": new_phone()})).status_code == 202


def test_the_client_address_rules():
    from service.http.client_address import client_ip, limit_bucket, parse_networks

    trusted = parse_networks("10.0.0.0/8, 192.0.2.10, fd00::/8")
    assert client_ip("198.51.100.1", ["6.6.6.6"], trusted) == "198.51.100.1"  # an untrusted peer: XFF ignored
    assert client_ip("198.51.100.1", ["6.6.6.6"], ()) == "198.51.100.1"
    assert client_ip("10.1.1.1", ["6.6.6.6, 7.7.7.7"], trusted) == "7.7.7.7"  # right-most untrusted
    assert client_ip("10.1.1.1", ["6.6.6.6", "7.7.7.7, 10.2.2.2"], trusted) == "7.7.7.7"
    assert client_ip("10.1.1.1", [], trusted) == "10.1.1.1"  # no header: the proxy itself
    assert client_ip("10.1.1.1", ["garbage, 7.7.7.7"], trusted) == "7.7.7.7"
    assert client_ip("10.1.1.1", ["7.7.7.7, garbage"], trusted) == "10.1.1.1"  # believe nothing left of garbage
    assert client_ip("fd00::1", ["[2001:db8::1]:4711"], trusted) == "2001:db8::1"
    assert client_ip("::ffff:198.51.100.1", [], trusted) == "198.51.100.1"
    assert limit_bucket("2001:db8:1:2:3:4:5:6") == limit_bucket("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert limit_bucket("2001:db8:1:3::9") != limit_bucket("2001:db8:1:2::9")
    assert limit_bucket("198.51.100.1") == "198.51.100.1"
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8, proxy.internal")


async def test_a_flood_of_refused_attempts_costs_no_database_write(client, ctx):
    limit = ctx.settings.registration_limit_per_minute
    await at_top_of_a_minute(client)
    async with client_at(client._transport.app, "198.51.100.30") as flood:
        for _ in range(limit):
            assert (await flood.post("/v1/consumers/verifications", json={"phone": new_phone()})).status_code == 202
        calls = 0
        real_run = ctx.writer.run

        async def counting_run(op):
            nonlocal calls
            calls += 1
            return await real_run(op)

        ctx.writer.run = counting_run
        try:
            for _ in range(200):
                assert_error(await flood.post("/v1/consumers/verifications", json={"phone": new_phone()}), 429)
                assert_error(
                    await flood.post(
                        "/v1/consumers",
                        json={"name": "Bot", "phone": new_phone(), "verification_id": "vrf_x", "code": "123456"},
                    ),
                    429,
                )
        finally:
            del ctx.writer.run
    assert calls == 0, f"{calls} refused attempts reached the writer"


# ---- finding 4: nothing reveals whether a phone is registered ----------------------------------------------


async def test_verification_and_registration_answers_reveal_nothing_about_a_phone(client):
    known = (await register_consumer(client, "Owner 机主"))["phone"]
    unknown = new_phone()
    shapes, wrong_answers, foreign_answers = [], [], []
    async with client_at(client._transport.app, "198.51.100.40") as prober:
        for phone in (known, unknown):
            r = await prober.post("/v1/consumers/verifications", json={"phone": phone})
            assert r.status_code == 202, r.text
            body = r.json()
            assert set(body) == {"verification_id", "expires_at"}
            shapes.append((r.status_code, sorted(body), len(body["verification_id"]), sorted(r.headers.keys())))
            code = await latest_code(client, phone)
            for name, body_ in (("registration", {"name": "Prober", "phone": phone}), ("sign-in", {"phone": phone})):
                path = "/v1/consumers" if name == "registration" else "/v1/consumers/sessions"
                wrong = await prober.post(
                    path,
                    json={
                        **body_,
                        "verification_id": body["verification_id"],
                        "code": "000000" if code != "000000" else "111111",
                    },
                )
                wrong_answers.append((name, wrong.status_code, wrong.json()))
                foreign = await prober.post(
                    path, json={**body_, "verification_id": "vrf_0123456789abcdef", "code": "123456"}
                )
                foreign_answers.append((name, foreign.status_code, foreign.json()))
    assert shapes[0] == shapes[1]
    for answers in (wrong_answers, foreign_answers):
        by_flow = {}
        for name, status, body in answers:
            by_flow.setdefault(name, []).append((status, body))
        for name, pair in by_flow.items():
            assert pair[0] == pair[1], f"{name} answers differ for a registered and an unregistered phone: {pair}"
            assert pair[0][0] == 422 and pair[0][1]["error"]["code"] == "invalid_code", pair
    # only the right code, which proves the phone is yours, tells you that you are registered already
    async with client_at(client._transport.app, "198.51.100.41") as owner:
        assert_error(await register(owner, known, reader=client), 409, "phone_already_registered")
        assert (await register(owner, unknown, reader=client)).status_code == 201


# ---- finding 5: an anonymous replay never hands out a token -------------------------------------------------


async def test_a_replay_from_another_client_at_the_same_address_gets_no_token(client, ctx):
    phone = new_phone()
    app = client._transport.app
    async with client_at(app, "198.51.100.50", 41000) as first:
        vid, code = await verify_phone(first, phone, reader=client)
        body = {"name": "Zhou Qi 周七", "phone": phone, "verification_id": vid, "code": code}
        key = {"Idempotency-Key": "register-" + secrets.token_hex(4)}
        r = await first.post("/v1/consumers", json=body, headers=key)
        assert r.status_code == 201 and r.json()["token"].startswith("cs_"), r.text
        token = r.json()["token"]
        mine = await first.post("/v1/consumers", json=body, headers=key)
    async with client_at(app, "198.51.100.50", 41001) as neighbour:
        theirs = await neighbour.post("/v1/consumers", json=body, headers=key)
    for again in (mine, theirs):
        assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true", again.text
        assert "token" not in again.json() and token not in again.text and token[3:] not in again.text
        assert again.json() == {k: v for k, v in r.json().items() if k != "token"}
    # sign-in replays alike; and no table keeps the token, not even sealed for a replay
    async with client_at(app, "198.51.100.50", 41002) as device:
        vid, code = await verify_phone(device, phone, reader=client)
        body = {"phone": phone, "verification_id": vid, "code": code}
        key = {"Idempotency-Key": "sign-in-" + secrets.token_hex(4)}
        s = await device.post("/v1/consumers/sessions", json=body, headers=key)
        assert s.status_code == 201 and s.json()["token"], s.text
        replay = await device.post("/v1/consumers/sessions", json=body, headers=key)
        assert replay.status_code == 201 and replay.json() == {"consumer_id": r.json()["id"]}, replay.text
    async with ctx.engines.reader.connect() as conn:
        for table in metadata.sorted_tables:
            dump = repr((await conn.execute(select(table))).all())
            for t in (token, s.json()["token"]):
                assert t[3:] not in dump, f"a consumer token is stored in {table.name}"
    for t in (token, s.json()["token"]):
        assert (await client.get("/v1/consumers/me", headers=bearer(t))).status_code == 200


# ---- finding 11: any caller fits the idempotency table ------------------------------------------------------


async def test_an_ipv6_client_with_an_idempotency_key_gets_its_answer(client):
    phone = new_phone()
    async with client_at(client._transport.app, "2001:0db8:85a3:1234:5678:8a2e:0370:7334") as mobile:
        key = {"Idempotency-Key": "a-phone-retrying-" + "x" * 40}
        r = await mobile.post("/v1/consumers/verifications", json={"phone": phone}, headers=key)
        assert r.status_code == 202, r.text
        again = await mobile.post("/v1/consumers/verifications", json={"phone": phone}, headers=key)
        assert again.status_code == 202 and again.json() == r.json(), again.text
        code = await latest_code(client, phone)
        body = {"name": "Wu Ba 吴八", "phone": phone, "verification_id": r.json()["verification_id"], "code": code}
        created = await mobile.post("/v1/consumers", json=body, headers={"Idempotency-Key": "register-" + "y" * 40})
        assert created.status_code == 201 and created.json()["token"], created.text


# ---- the code itself ---------------------------------------------------------------------------------------


async def test_five_wrong_codes_burn_a_verification(client):
    phone = new_phone()
    async with client_at(client._transport.app, "198.51.100.60") as guesser:
        vid, code = await verify_phone(guesser, phone, reader=client)
        wrong = [f"{n:06d}" for n in range(1000) if f"{n:06d}" != code][:5]
        body = {"name": "Guesser", "phone": phone, "verification_id": vid}
        for guess in wrong[:4]:
            assert_error(await guesser.post("/v1/consumers", json={**body, "code": guess}), 422, "invalid_code")
        assert_error(await guesser.post("/v1/consumers", json={**body, "code": wrong[4]}), 409, "verification_burned")
        assert_error(await guesser.post("/v1/consumers", json={**body, "code": code}), 409, "verification_burned")
        # a wrong phone with the right code is a miss too (a code is for one phone)
        vid, code = await verify_phone(guesser, phone, reader=client)
        assert_error(
            await guesser.post(
                "/v1/consumers", json={**body, "verification_id": vid, "phone": new_phone(), "code": code}
            ),
            422,
            "invalid_code",
        )
        assert (
            await guesser.post("/v1/consumers", json={**body, "verification_id": vid, "code": code})
        ).status_code == 201


async def test_an_expired_code_is_refused(client):
    phone = new_phone()
    async with client_at(client._transport.app, "198.51.100.61") as slow:
        started = await slow.post("/v1/consumers/verifications", json={"phone": phone})
        assert started.status_code == 202
        expires_at = parse_time(started.json()["expires_at"])
        code = await latest_code(client, phone)
        await move_clock_to(client, expires_at + timedelta(seconds=1))
        r = await slow.post(
            "/v1/consumers",
            json={"name": "Slow", "phone": phone, "code": code, "verification_id": started.json()["verification_id"]},
        )
        assert_error(r, 409, "verification_expired")


async def test_expiry_is_five_minutes_and_a_verification_serves_once(client):
    phone = new_phone()
    async with client_at(client._transport.app, "198.51.100.62") as c:
        vid, code = await verify_phone(c, phone, reader=client)
        outbox = (await client.get("/v1/test/sms", params={"phone": phone}, headers=OP)).json()["items"]
        assert len(outbox) == 1 and outbox[0]["phone"] == phone and code in outbox[0]["text"]
        sent_at = parse_time(outbox[0]["sent_at"])
        await move_clock_to(client, sent_at + timedelta(minutes=4, seconds=50))
        body = {"name": "Once", "phone": phone, "verification_id": vid, "code": code}
        assert (await c.post("/v1/consumers", json=body)).status_code == 201
        assert_error(
            await c.post("/v1/consumers/sessions", json={k: body[k] for k in ("phone", "verification_id", "code")}),
            409,
            "verification_used",
        )


async def test_a_phone_gets_at_most_five_codes_an_hour(client, ctx):
    phone = new_phone()
    per_hour = ctx.settings.codes_per_phone_per_hour
    assert per_hour == 5
    start = await at_top_of_a_minute(client)
    for i in range(per_hour):  # from five addresses: the limit is the phone's, not the address's
        async with client_at(client._transport.app, f"198.51.100.{70 + i}") as c:
            assert (await c.post("/v1/consumers/verifications", json={"phone": phone})).status_code == 202
    async with client_at(client._transport.app, "198.51.100.80") as c:
        error = assert_error(await c.post("/v1/consumers/verifications", json={"phone": phone}), 429, "too_many_codes")
        assert phone not in error["message"]
        assert (await c.post("/v1/consumers/verifications", json={"phone": new_phone()})).status_code == 202
        await move_clock_to(client, start + timedelta(hours=1, seconds=1))
        assert (await c.post("/v1/consumers/verifications", json={"phone": phone})).status_code == 202


# ---- sign-in and sign-out ------------------------------------------------------------------------------------


async def test_signing_in_on_a_new_device_sees_the_same_cards(client):
    gym = await create_merchant(client)
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    li = await register_consumer(client, "Li Lei 李雷")
    card = await buy_card(client, li, product)
    phone_lost = await sign_in(client, li["phone"])
    assert set(phone_lost) == {"consumer_id", "token", "headers"} and phone_lost["consumer_id"] == li["id"]
    assert phone_lost["token"] != li["token"]
    for headers in (phone_lost["headers"], li["headers"]):  # the old device keeps working too
        r = await client.get("/v1/consumers/me/cards", headers=headers)
        assert r.status_code == 200 and [c["id"] for c in r.json()["items"]] == [card["id"]], r.text


async def test_signing_in_with_an_unregistered_phone_says_so_only_to_the_code_holder(client):
    phone = new_phone()
    async with client_at(client._transport.app, "198.51.100.90") as c:
        vid, code = await verify_phone(c, phone, reader=client)
        r = await c.post("/v1/consumers/sessions", json={"phone": phone, "verification_id": vid, "code": code})
        assert_error(r, 404, "phone_not_registered")
        assert phone not in r.text


async def test_signing_out_makes_that_token_401_at_once_and_leaves_the_others(client):
    li = await register_consumer(client)
    tablet = await sign_in(client, li["phone"])
    assert (await client.get("/v1/consumers/me", headers=tablet["headers"])).status_code == 200  # now cached
    r = await client.delete("/v1/consumers/me/tokens/current", headers=tablet["headers"])
    assert r.status_code == 204 and r.content == b""
    assert_error(await client.get("/v1/consumers/me", headers=tablet["headers"]), 401, "bad_token")
    assert_error(await client.delete("/v1/consumers/me/tokens/current", headers=tablet["headers"]), 401)
    assert (await client.get("/v1/consumers/me", headers=li["headers"])).status_code == 200


async def test_signing_out_on_one_replica_is_401_on_another_at_once(client, data_dir):
    li = await register_consumer(client)
    async with second_instance(data_dir) as replica:
        assert (await replica.get("/v1/consumers/me", headers=li["headers"])).status_code == 200  # cached there
        assert (await client.delete("/v1/consumers/me/tokens/current", headers=li["headers"])).status_code == 204
        assert_error(await replica.get("/v1/consumers/me", headers=li["headers"]), 401, "bad_token")
        assert_error(await replica.get("/v1/ping", headers=li["headers"]), 401, "bad_token")


# ---- the SMS senders --------------------------------------------------------------------------------------


def http_sender(settings: Settings, gateway):
    from service.consumers.sms import HttpSender

    return HttpSender(settings, transport=httpx.MockTransport(gateway))


def gateway_settings(**overrides) -> Settings:
    return Settings(
        **{
            "env": "production",
            "sms_sender": "http",
            "sms_url": "https://sms.example.cn/send",
            "sms_token": "gateway-token-123",
            "sms_sign_name": "预付保",
            "sms_template": "SMS_123",
            "sms_retries": 2,
            **overrides,
        }
    )


async def test_the_http_sender_posts_the_gateway_shape_and_retries(caplog):
    seen: list[httpx.Request] = []
    answers = iter([500, 200])

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(answers), json={"ok": True})

    sender = http_sender(gateway_settings(), gateway)
    caplog.set_level(logging.DEBUG)
    assert await sender.deliver("13800138000", "123456") is True
    assert len(seen) == 2
    for request in seen:
        assert request.method == "POST" and str(request.url) == "https://sms.example.cn/send"
        assert request.headers["authorization"] == "Bearer gateway-token-123"
        import json

        assert json.loads(request.content) == {
            "phone": "13800138000",
            "sign_name": "预付保",
            "template_code": "SMS_123",
            "template_param": {"code": "123456"},
        }
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "123456" not in logged and "13800138000" not in logged


async def test_the_http_sender_gives_up_after_its_retries_on_timeouts():
    calls = 0

    def gateway(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("slow gateway", request=request)

    sender = http_sender(gateway_settings(sms_retries=1), gateway)
    assert await sender.deliver("13800138000", "654321") is False
    assert calls == 2


async def test_with_the_http_sender_the_code_reaches_the_gateway_and_no_table(client, ctx):
    import asyncio
    import json

    got: list[dict] = []
    sender = http_sender(
        gateway_settings(), lambda request: got.append(json.loads(request.content)) or httpx.Response(202)
    )
    ctx.extras["sms_sender"] = sender
    try:
        phone = new_phone()
        async with client_at(client._transport.app, "198.51.100.95") as c:
            started = await c.post("/v1/consumers/verifications", json={"phone": phone})
            assert started.status_code == 202
            for _ in range(200):  # delivery runs after the answer; bounded wait
                if got:
                    break
                await asyncio.sleep(0.01)
            assert len(got) == 1 and got[0]["phone"] == phone and len(got[0]["template_param"]["code"]) == 6
            assert (await client.get("/v1/test/sms", params={"phone": phone}, headers=OP)).json()["items"] == []
            r = await c.post(
                "/v1/consumers",
                json={
                    "name": "Gateway user",
                    "phone": phone,
                    "verification_id": started.json()["verification_id"],
                    "code": got[0]["template_param"]["code"],
                },
            )
            assert r.status_code == 201, r.text
    finally:
        ctx.extras.pop("sms_sender")


def test_the_outbox_route_exists_only_in_the_test_environment(tmp_path):
    from api_tests.factories import serving_routes

    development = create_app(Settings(env="development", data_dir=tmp_path, operator_token=OPERATOR_TOKEN))
    assert ("GET", "/v1/test/sms") not in serving_routes(development)
    assert ("POST", "/v1/consumers/verifications") in serving_routes(development)
