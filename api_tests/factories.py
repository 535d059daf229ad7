"""Small factories: each does one thing over HTTP and returns what the API answered."""

from __future__ import annotations

import itertools
import random
import secrets

import httpx

from api_tests.conftest import OPERATOR_TOKEN
from service.uscc import ALPHABET, check_character

OP = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
_addresses = itertools.count(1)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def valid_uscc(rng: random.Random | None = None) -> str:
    rng = rng or random.Random(secrets.randbits(64))
    body = "91" + "".join(rng.choice("0123456789") for _ in range(6)) + "".join(rng.choice(ALPHABET) for _ in range(9))
    return body + check_character(body)


async def create_merchant(client: httpx.AsyncClient, name: str = "Iron Gym 铁馆健身", category: str = "fitness") -> dict:
    r = await client.post("/v1/merchants", json={"name": name, "uscc": valid_uscc(), "category": category}, headers=OP)
    assert r.status_code == 201, r.text
    m = r.json()
    m["headers"] = bearer(m["api_key"])
    return m


async def create_party(client: httpx.AsyncClient, kind: str, name: str = "Weihai AMR 市场监管局") -> dict:
    r = await client.post(f"/v1/{kind}", json={"name": name}, headers=OP)
    assert r.status_code == 201, r.text
    p = r.json()
    p["headers"] = bearer(p["api_key"])
    return p


async def register_consumer(client: httpx.AsyncClient, name: str = "Li Lei 李雷") -> dict:
    # Each registration from its own address, as real consumers' phones would be (the limit is per address).
    transport = client._transport
    n = next(_addresses)
    own = httpx.AsyncClient(transport=httpx.ASGITransport(app=transport.app, client=(f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", 40000)),
                            base_url=str(client.base_url))
    async with own:
        phone = "13" + "".join(random.choice("0123456789") for _ in range(9))
        r = await own.post("/v1/consumers", json={"name": name, "phone": phone})
    assert r.status_code == 201, r.text
    c = r.json()
    c["phone"] = phone
    c["headers"] = bearer(c["token"])
    return c


async def publish(client: httpx.AsyncClient, merchant: dict, **fields) -> dict:
    body = {"type": "stored_value", "name": "1000 yuan card 充1000送200", "price": 100_000, "face_value": 120_000,
            "valid_days": 365}
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None}
    r = await client.post("/v1/products", json=body, headers=merchant["headers"])
    assert r.status_code == 201, r.text
    return r.json()


async def buy_card(client: httpx.AsyncClient, consumer: dict, product: dict, reference: str | None = None) -> dict:
    r = await client.post("/v1/cards", json={"product_id": product["id"], "payment": {
        "method": "wechat_pay", "reference": reference or f"wx-{secrets.token_hex(6)}"}}, headers=consumer["headers"])
    assert r.status_code == 201, r.text
    return r.json()


async def ask(client: httpx.AsyncClient, merchant: dict, card: dict, expect: int = 201, **units) -> dict:
    r = await client.post(f"/v1/cards/{card['id']}/redemptions", json=units, headers=merchant["headers"])
    assert r.status_code == expect, r.text
    return r.json()


async def answer(client: httpx.AsyncClient, party: dict, redemption: dict, action: str, expect: int = 200) -> dict:
    r = await client.post(f"/v1/redemptions/{redemption['id']}/{action}", headers=party["headers"])
    assert r.status_code == expect, r.text
    return r.json()


async def get_card(client: httpx.AsyncClient, party: dict, card: dict) -> dict:
    r = await client.get(f"/v1/cards/{card['id']}", headers=party["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def redeem(client, merchant, consumer, card, **units) -> dict:
    """Ask and confirm: one confirmed redemption."""
    return await answer(client, consumer, await ask(client, merchant, card, **units), "confirm")


async def move_clock(client: httpx.AsyncClient, now: str) -> dict:
    r = await client.post("/v1/test/clock", json={"now": now}, headers=OP)
    assert r.status_code == 200, r.text
    return r.json()
