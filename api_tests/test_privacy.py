"""Secrets and personal data (SPEC §1, §4): phone numbers stay out of the ledger, the export, error
messages, profiles and logs; tokens are kept only as hashes; registration is rate-limited per address;
production refuses to start on development secrets.
"""

from __future__ import annotations

import base64
import io
import logging
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from api_tests.conftest import OPERATOR_TOKEN
from api_tests.factories import (
    OP,
    assert_error,
    client_at,
    create_auditor,
    create_regulator,
    latest_code,
    ledger_entries,
    ledger_mix,
    move_clock_to,
    register_consumer,
    valid_uscc,
    verify_phone,
)
from service.app import build_context
from service.core.settings import Settings
from service.db.models import ApiToken, metadata
from service.ledger_api.export import export_jsonl


def phone_forms(phone: str) -> list[str]:
    """The ways a phone number could leak: as given, with the country code, spaced, and its significant digits."""
    return [phone, "+86" + phone, f"{phone[:3]} {phone[3:7]} {phone[7:]}", phone[1:]]


def assert_no_phone(text_: str, phones: list[str], where: str) -> None:
    for phone in phones:
        for form in phone_forms(phone):
            assert form not in text_, f"phone {phone} appears in {where}"


async def everyone_and_their_phones(client) -> tuple[dict, list[str], list[str]]:
    mix = await ledger_mix(client)
    return mix, [mix["li"]["phone"], mix["han"]["phone"]], [mix["li"]["name"], mix["han"]["name"]]


async def test_no_phone_number_or_name_enters_the_ledger_or_its_export(client, ctx):
    mix, phones, names = await everyone_and_their_phones(client)
    entries = await ledger_entries(client, await create_auditor(client))
    assert len(entries) >= 20
    dump = "\n".join(e["canonical"] for e in entries) + repr(entries)
    assert_no_phone(dump, phones, "a ledger entry")
    for name in names + [mix["gym"]["name"], mix["spa"]["name"]]:
        assert name not in dump, f"the name {name!r} appears in a ledger entry"
    for consumer in (mix["li"], mix["han"]):
        assert consumer["phone_hint"] not in dump
    out = io.BytesIO()
    assert await export_jsonl(ctx.engines.reader, out) == len(entries)
    exported = out.getvalue().decode()
    assert_no_phone(exported, phones, "the ledger export")
    assert all(name not in exported for name in names)


async def test_a_consumer_sees_only_the_masked_hint_of_its_phone(client):
    mix, phones, _ = await everyone_and_their_phones(client)
    for consumer in (mix["li"], mix["han"]):
        me = await client.get("/v1/consumers/me", headers=consumer["headers"])
        assert me.status_code == 200, me.text
        assert_no_phone(me.text, [consumer["phone"]], "GET /v1/consumers/me")
        assert me.json()["phone_hint"] == consumer["phone"][:3] + "****" + consumer["phone"][-4:]
        assert "phone" not in me.json()
    for path, headers in (
        ("/v1/consumers/me/cards", mix["li"]["headers"]),
        ("/v1/merchants/me/cards", mix["gym"]["headers"]),
        ("/v1/consumers/me/redemptions", mix["han"]["headers"]),
        ("/v1/complaints", OP),
        (f"/v1/cards/{mix['cards']['a']['id']}", mix["gym"]["headers"]),
    ):
        r = await client.get(path, headers=headers)
        assert r.status_code == 200, r.text
        assert_no_phone(r.text, phones, f"GET {path}")


async def test_error_answers_never_echo_a_phone_number(client):
    phone = "139" + "".join(secrets.choice("0123456789") for _ in range(8))
    first = await register_consumer(client, "Zhang San 张三", phone=phone)
    assert_no_phone(repr({k: v for k, v in first.items() if k != "phone"}), [phone], "the registration answer")
    async with client_at(client._transport.app, "198.51.100.7") as c:
        for again in (
            phone,
            "+86" + phone,
            f"{phone[:3]} {phone[3:7]} {phone[7:]}",
            f"{phone[:3]}-{phone[3:7]}-{phone[7:]}",
        ):
            started = await c.post("/v1/consumers/verifications", json={"phone": again})
            assert started.status_code == 202 and phone not in started.text, started.text
            code = await latest_code(client, phone)
            error = assert_error(
                await c.post(
                    "/v1/consumers",
                    json={
                        "name": "Copycat",
                        "phone": again,
                        "verification_id": started.json()["verification_id"],
                        "code": code,
                    },
                ),
                409,
                "phone_already_registered",
            )
            assert_no_phone(error["message"], [phone], "the duplicate registration error")
        for bad in (phone + "9", "+1" + phone, phone[:5] + "abc", "0" * 20, "1" * 21):
            for path, body in (
                ("/v1/consumers/verifications", {"phone": bad}),
                ("/v1/consumers", {"name": "Bad phone", "phone": bad, "verification_id": "vrf_x", "code": "123456"}),
            ):
                r = await c.post(path, json=body)
                assert r.status_code == 422, r.text
                assert bad not in r.text and phone not in r.text


async def test_logs_never_carry_a_phone_number_even_at_debug(client, caplog):
    phone = "138" + "".join(secrets.choice("0123456789") for _ in range(8))
    caplog.set_level(logging.DEBUG)
    await register_consumer(client, "Li Si 李四", phone=phone)
    async with client_at(client._transport.app, "198.51.100.8") as c:
        vid, code = await verify_phone(c, phone, reader=client)
        body = {"name": "Li Si 李四", "phone": phone, "verification_id": vid, "code": code}
        assert (await c.post("/v1/consumers", json=body)).status_code == 409
        r = await c.post("/v1/consumers", json=body, headers={"Idempotency-Key": "register-twice"})
        assert r.status_code == 409
        assert (
            await c.post("/v1/consumers/sessions", json={"phone": phone, "verification_id": vid, "code": "000000"})
        ).status_code in (409, 422)
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    # the test's own client logging its reads of the test-only outbox (GET /v1/test/sms?phone=) is not the service
    records = [rec for rec in caplog.records if "/v1/test/sms?" not in rec.getMessage()]
    logged = "\n".join(f"{rec.name} {rec.getMessage()} {rec.args!r} {rec.exc_text or ''}" for rec in records)
    assert_no_phone(logged, [phone], "the logs")


async def test_tokens_are_stored_only_as_hashes(client, ctx):
    mix, _, _ = await everyone_and_their_phones(client)
    regulator, auditor = await create_regulator(client), await create_auditor(client)
    raw = [
        OPERATOR_TOKEN,
        mix["gym"]["api_key"],
        mix["spa"]["api_key"],
        mix["li"]["token"],
        mix["han"]["token"],
        regulator["api_key"],
        auditor["api_key"],
    ]
    assert all(len(t) >= 25 for t in raw)
    async with ctx.engines.reader.connect() as conn:
        rows = (await conn.execute(select(ApiToken.__table__))).all()
        assert len(rows) == 6  # every party's token but the operator's, which comes from the environment
        stored = repr([tuple(r) for r in rows])
        for token in raw:
            assert token not in stored and token[3:] not in stored, "a raw token is stored in api_tokens"
        # and no other table holds one either (ledger, cards, parties …); answers kept for Idempotency-Key
        # replays are not part of this scan: none of these tokens was issued under a key
        for table in metadata.sorted_tables:
            dump = repr((await conn.execute(select(table))).all())
            for token in raw:
                assert token[3:] not in dump, f"a raw token is stored in {table.name}"
    for token in raw:  # the tokens still work: the hashes are what is looked up
        r = await client.get("/v1/ping", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text


async def test_the_anonymous_limit_is_per_address(client, ctx):
    """Verifications, registrations and sign-ins share one allowance per client address a minute."""
    limit = ctx.settings.registration_limit_per_minute
    assert limit == 60
    # start at the top of a minute, so the limit's one-minute window holds all the attempts below
    now = datetime.now(UTC) + timedelta(minutes=1)
    await move_clock_to(client, now.replace(second=0, microsecond=0) + timedelta(minutes=1))
    app = client._transport.app

    def body(i: int) -> dict:
        return {"phone": f"137{i:08d}"}

    async with client_at(app, "203.0.113.50", 5000) as crowded:
        for i in range(limit - 2):
            r = await crowded.post("/v1/consumers/verifications", json=body(i))
            assert r.status_code == 202, f"verification {i + 1}: {r.text}"
        vid, code = await verify_phone(crowded, "13700000000", reader=client)  # the 59th attempt
        r = await crowded.post(
            "/v1/consumers", json={"name": "Bot", "phone": "13700000000", "verification_id": vid, "code": code}
        )
        assert r.status_code == 201, r.text  # the 60th
        error = assert_error(await crowded.post("/v1/consumers/verifications", json=body(limit)), 429, "rate_limited")
        assert "137" not in error["message"]
        assert_error(
            await crowded.post(
                "/v1/consumers/sessions", json={"phone": "13700000000", "verification_id": vid, "code": code}
            ),
            429,
            "rate_limited",
        )
        assert_error(
            await crowded.post(
                "/v1/consumers", json={"name": "Bot", "phone": "13700000001", "verification_id": vid, "code": code}
            ),
            429,
            "rate_limited",
        )
    async with client_at(app, "203.0.113.50", 5001) as same_address_other_port:
        assert_error(
            await same_address_other_port.post("/v1/consumers/verifications", json=body(limit + 2)), 429, "rate_limited"
        )
    async with client_at(app, "203.0.113.51") as neighbour:
        r = await neighbour.post("/v1/consumers/verifications", json=body(limit + 3))
        assert r.status_code == 202, r.text
    async with client_at(app, "2001:db8::1") as ipv6:
        assert (await ipv6.post("/v1/consumers/verifications", json=body(limit + 4))).status_code == 202
    await move_clock_to(client, now.replace(second=0, microsecond=0) + timedelta(minutes=2, seconds=1))
    async with client_at(app, "203.0.113.50", 5000) as crowded:  # a new minute, a new allowance
        r = await crowded.post("/v1/consumers/verifications", json=body(limit + 5))
        assert r.status_code == 202, r.text


# ---- production refuses development secrets ------------------------------------------------------


def production_secrets() -> dict:
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    return {
        "operator_token": "op_" + secrets.token_urlsafe(32),
        "phone_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "signing_key": pem,
        "database_url": "postgresql://escrow@db.internal:5432/escrow",
        "sms_url": "https://sms.example.cn/v1/send",
        "sms_token": secrets.token_urlsafe(24),
    }


def test_production_with_every_secret_given_passes_the_check(tmp_path):
    settings = Settings(env="production", data_dir=tmp_path, **production_secrets())
    settings.check_production()
    assert build_context(settings).keys.operator_token == settings.operator_token  # nothing connects yet
    assert list(tmp_path.iterdir()) == [], "production generates no key into the data folder"


@pytest.mark.parametrize(
    "field,value",
    [
        ("operator_token", ""),
        ("operator_token", "changethis"),
        ("operator_token", "changeme"),
        ("operator_token", "secret"),
        ("operator_token", "dev"),
        ("operator_token", "  CHANGETHIS  "),
        ("operator_token", "op_short"),
        ("phone_key", ""),
        ("signing_key", ""),
        ("database_url", ""),
        ("sms_url", ""),
        ("sms_url", "ftp://sms.example.cn"),
        ("sms_token", ""),
        ("sms_token", "changethis"),
        ("sms_sender", "outbox"),
        ("trusted_proxies", "10.0.0.0/8, not-an-address"),
    ],
)
def test_production_refuses_a_default_or_missing_secret(tmp_path, field, value):
    settings = Settings(env="production", data_dir=tmp_path, **{**production_secrets(), field: value})
    with pytest.raises(RuntimeError, match="refusing to start in production"):
        settings.check_production()
    with pytest.raises(RuntimeError, match="refusing to start in production"):
        build_context(settings)
    assert list(tmp_path.iterdir()) == [], "nothing (no generated key, no database) is made before refusing"


def test_production_takes_the_outbox_sender_only_when_told_to(tmp_path):
    settings = Settings(
        env="production",
        data_dir=tmp_path,
        **{**production_secrets(), "sms_sender": "outbox", "sms_outbox_in_production": True},
    )
    settings.check_production()
    assert settings.effective_sms_sender == "outbox"
    assert Settings(env="production", data_dir=tmp_path, **production_secrets()).effective_sms_sender == "http"
    assert Settings(env="development", data_dir=tmp_path).effective_sms_sender == "outbox"


def test_production_refuses_a_development_data_folder_without_any_secret(tmp_path):
    settings = Settings(
        env="production", data_dir=tmp_path, operator_token="", phone_key="", signing_key="", database_url=""
    )
    with pytest.raises(RuntimeError) as refused:
        build_context(settings)
    message = str(refused.value)
    for name in ("ESCROW_OPERATOR_TOKEN", "ESCROW_PHONE_KEY", "ESCROW_SIGNING_KEY", "ESCROW_DATABASE_URL"):
        assert name in message


@pytest.mark.parametrize("field", ["phone_key", "signing_key"])
@pytest.mark.parametrize("value", ["changethis", "dev", "c2VjcmV0"])
def test_production_refuses_a_placeholder_key(tmp_path, field, value):
    """Not base64 of 32 bytes, or not an Ed25519 PEM: the keys fail to load, so the context is never built."""
    settings = Settings(env="production", data_dir=tmp_path, **{**production_secrets(), field: value})
    with pytest.raises(Exception):
        build_context(settings)


async def test_a_token_issued_under_an_idempotency_key_is_kept_only_encrypted_and_replays_intact(client, ctx):
    body = {"name": "Replay Gym", "uscc": valid_uscc(), "category": "fitness"}
    first = await client.post("/v1/merchants", json=body, headers={**OP, "Idempotency-Key": "onboard-replay-1"})
    again = await client.post("/v1/merchants", json=body, headers={**OP, "Idempotency-Key": "onboard-replay-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    key = first.json()["api_key"]
    assert again.json()["api_key"] == key  # the replay answers the first answer, token included
    async with ctx.engines.reader.connect() as conn:
        for table in metadata.sorted_tables:
            dump = repr((await conn.execute(select(table))).all())
            assert key[3:] not in dump, f"the raw token is stored in {table.name}"
    r = await client.get("/v1/merchants/me", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["name"] == "Replay Gym"
