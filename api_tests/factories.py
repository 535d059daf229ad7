"""Small factories: each does one thing over HTTP and returns what the API answered."""

from __future__ import annotations

import itertools
import random
import secrets
from datetime import UTC, datetime, timedelta

import httpx

from api_tests.conftest import OPERATOR_TOKEN
from service.core.uscc import ALPHABET, check_character

OP = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
_addresses = itertools.count(1)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def valid_uscc(rng: random.Random | None = None) -> str:
    rng = rng or random.Random(secrets.randbits(64))
    body = "91" + "".join(rng.choice("0123456789") for _ in range(6)) + "".join(rng.choice(ALPHABET) for _ in range(9))
    return body + check_character(body)


async def create_merchant(
    client: httpx.AsyncClient, name: str = "Iron Gym 铁馆健身", category: str = "fitness"
) -> dict:
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


async def register_consumer(client: httpx.AsyncClient, name: str = "Li Lei 李雷", phone: str | None = None) -> dict:
    """Verification → the code from the test outbox → registration (SPEC §8). Returns the answer plus
    `phone` and `headers`."""
    # Each registration from its own address, as real consumers' phones would be (the limit is per address).
    phone = phone or random_phone()
    async with own_address(client) as own:
        verification_id, code = await verify_phone(own, phone, reader=client)
        r = await own.post(
            "/v1/consumers", json={"name": name, "phone": phone, "verification_id": verification_id, "code": code}
        )
    assert r.status_code == 201, r.text
    c = r.json()
    c["phone"] = phone
    c["headers"] = bearer(c["token"])
    return c


def random_phone() -> str:
    return "13" + "".join(random.choice("0123456789") for _ in range(9))


def own_address(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client on the same app from an address no other factory call uses."""
    n = next(_addresses)
    return client_at(client._transport.app, f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")


async def latest_code(client: httpx.AsyncClient, phone: str) -> str:
    """The last code sent to `phone`, read from the outbox (ESCROW_ENV=test, operator only)."""
    r = await client.get("/v1/test/sms", params={"phone": phone}, headers=OP)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items, f"no SMS was sent to {phone[:3]}****"
    return items[-1]["code"]


async def verify_phone(
    client: httpx.AsyncClient, phone: str, reader: httpx.AsyncClient | None = None, headers: dict | None = None
) -> tuple[str, str]:
    """Ask for a code for `phone` → (verification_id, code)."""
    r = await client.post("/v1/consumers/verifications", json={"phone": phone}, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["verification_id"], await latest_code(reader or client, phone)


async def sign_in(client: httpx.AsyncClient, phone: str) -> dict:
    """Sign in again with a new code (a new device): the answer plus `headers`."""
    async with own_address(client) as own:
        verification_id, code = await verify_phone(own, phone, reader=client)
        r = await own.post(
            "/v1/consumers/sessions", json={"phone": phone, "verification_id": verification_id, "code": code}
        )
    assert r.status_code == 201, r.text
    s = r.json()
    s["headers"] = bearer(s["token"])
    return s


async def publish(client: httpx.AsyncClient, merchant: dict, **fields) -> dict:
    body = {
        "type": "stored_value",
        "name": "1000 yuan card 充1000送200",
        "price": 100_000,
        "face_value": 120_000,
        "valid_days": 365,
    }
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None}
    r = await client.post("/v1/products", json=body, headers=merchant["headers"])
    assert r.status_code == 201, r.text
    return r.json()


async def buy_card(client: httpx.AsyncClient, consumer: dict, product: dict, reference: str | None = None) -> dict:
    r = await client.post(
        "/v1/cards",
        json={
            "product_id": product["id"],
            "payment": {"method": "wechat_pay", "reference": reference or f"wx-{secrets.token_hex(12)}"},
        },
        headers=consumer["headers"],
    )
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


# ---- more small factories -------------------------------------------------------------------


async def create_regulator(client: httpx.AsyncClient, name: str = "Weihai AMR 市场监管局") -> dict:
    return await create_party(client, "regulators", name)


async def create_auditor(client: httpx.AsyncClient, name: str = "Custodian Bank 托管银行") -> dict:
    return await create_party(client, "auditors", name)


async def publish_stored_value(client, merchant: dict, price: int, face_value: int, valid_days: int = 365) -> dict:
    return await publish(
        client,
        merchant,
        type="stored_value",
        name=f"充{price}送{face_value - price}",
        price=price,
        face_value=face_value,
        valid_days=valid_days,
    )


async def publish_count(
    client,
    merchant: dict,
    price: int,
    uses: int,
    bonus_uses: int | None = None,
    valid_days: int = 365,
    list_price: int | None = None,
) -> dict:
    return await publish(
        client,
        merchant,
        type="count",
        name=f"{uses}次卡",
        price=price,
        face_value=None,
        uses=uses,
        bonus_uses=bonus_uses,
        valid_days=valid_days,
        list_price=list_price,
    )


async def publish_period(
    client, merchant: dict, price: int, periods: int, period_days: int, valid_days: int | None = None
) -> dict:
    return await publish(
        client,
        merchant,
        type="period",
        name=f"{periods}期月卡",
        price=price,
        face_value=None,
        periods=periods,
        period_days=period_days,
        valid_days=valid_days or periods * period_days + 30,
    )


async def refund(client: httpx.AsyncClient, consumer: dict, card: dict, expect: int = 200) -> dict:
    r = await client.post(f"/v1/cards/{card['id']}/refund", headers=consumer["headers"])
    assert r.status_code == expect, r.text
    return r.json()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def move_clock_to(client: httpx.AsyncClient, when: datetime) -> dict:
    """Move the test clock to `when` (aware datetime); the sweeper runs at the new time."""
    return await move_clock(client, when.astimezone(UTC).isoformat())


async def move_clock_past(client: httpx.AsyncClient, iso_time: str, **delta) -> dict:
    """Move the test clock to an answer's timestamp plus `delta` (timedelta keywords)."""
    return await move_clock_to(client, parse_time(iso_time) + timedelta(**delta))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is the SPEC §5 error body with this status (and code, if given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# ---- ledger factories (api_tests/test_ledger_*.py) ---------------------------------------------


async def ledger_entries(client: httpx.AsyncClient, party: dict | None = None, limit: int = 7) -> list[dict]:
    """Every ledger entry the party may read (auditor by default), following the cursor, in seq order."""
    headers = party["headers"] if party else None
    if headers is None:
        auditor = await create_auditor(client, "Ledger reader 账本读取")
        headers = auditor["headers"]
    items: list[dict] = []
    after = None
    while True:
        params = {"limit": limit} if after is None else {"limit": limit, "after": after}
        r = await client.get("/v1/ledger/entries", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items.extend(body["items"])
        if body["next_cursor"] is None:
            return items
        after = body["next_cursor"]


async def ledger_public_key(client: httpx.AsyncClient) -> dict:
    r = await client.get("/v1/ledger/public-key")
    assert r.status_code == 200, r.text
    return r.json()


async def latest_checkpoint(client: httpx.AsyncClient) -> dict:
    r = await client.get("/v1/ledger/checkpoint")
    assert r.status_code == 200, r.text
    return r.json()


async def new_checkpoint(client: httpx.AsyncClient, party: dict) -> dict:
    r = await client.post("/v1/ledger/checkpoints", headers=party["headers"])
    assert r.status_code == 201, r.text
    return r.json()


async def inclusion_proof(client: httpx.AsyncClient, seq: int, tree_size: int) -> dict:
    r = await client.get(f"/v1/ledger/entries/{seq}/proof", params={"tree_size": tree_size})
    assert r.status_code == 200, r.text
    return r.json()


async def consistency_proof(client: httpx.AsyncClient, first: int, second: int) -> dict:
    r = await client.get("/v1/ledger/consistency", params={"first": first, "second": second})
    assert r.status_code == 200, r.text
    return r.json()


async def reconciliation(client: httpx.AsyncClient, party: dict) -> dict:
    r = await client.get("/v1/escrow/reconciliation", headers=party["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def ledger_mix(client: httpx.AsyncClient) -> dict:
    """Two merchants, two consumers, four cards; buys, confirms, a reject, a pending hold, two refunds.

    Returns the parties, cards and every answer, plus the exact fen totals this mix must leave:
    gym card 100000 fen for 120000 face fen; spa card 10001 fen for 3 uses.
    """
    gym = await create_merchant(client, "Iron Gym 铁馆健身", "fitness")
    spa = await create_merchant(client, "Lotus Spa 莲花水疗", "beauty")
    li = await register_consumer(client, "Li Lei 李雷")
    han = await register_consumer(client, "Han Meimei 韩梅梅")
    gym_card = await publish_stored_value(client, gym, price=100_000, face_value=120_000)
    spa_card = await publish_count(client, spa, price=10_001, uses=3)
    a = await buy_card(client, li, gym_card)  # li's gym card
    b = await buy_card(client, han, spa_card)  # han's spa card
    c = await buy_card(client, li, spa_card)  # li's spa card, refunded in cooling-off
    d = await buy_card(client, han, gym_card)  # han's gym card, left with a pending hold
    out = {
        "gym": gym,
        "spa": spa,
        "li": li,
        "han": han,
        "cards": {"a": a, "b": b, "c": c, "d": d},
        "purchases": [a, b, c, d],
        "holds": [],
        "confirms": [],
        "voids": [],
        "refunds": [],
    }

    async def hold(merchant, card, **units):
        h = await ask(client, merchant, card, **units)
        out["holds"].append(h)
        return h

    async def confirm(consumer, h):
        done = await answer(client, consumer, h, "confirm")
        out["confirms"].append(done)
        return done

    await confirm(li, await hold(gym, a, amount=12_000))  # releases 12000*100000//120000 = 10000
    out["voids"].append(await answer(client, li, await hold(gym, a, amount=6_000), "reject"))
    await hold(gym, a, amount=1_200)  # pending: voided by the refund below
    await confirm(han, await hold(spa, b, uses=1))  # 10001//3 = 3333
    out["voids"].append(await answer(client, han, await hold(spa, b, uses=1), "reject"))
    await confirm(han, await hold(spa, b, uses=1))  # 20002//3 - 3333 = 3334
    await confirm(han, await hold(gym, d, amount=24_000))  # 24000*100000//120000 = 20000
    await hold(gym, d, amount=1_200)  # stays pending: held 1000
    out["refunds"].append(await refund(client, li, a))  # consumer_quit: 100000-12000 = 88000, share 2000
    out["refunds"].append(await refund(client, li, c))  # cooling_off: 10001
    paid_in = 100_000 + 10_001 + 10_001 + 100_000
    released = 10_000 + 3_333 + 3_334 + 20_000 + (90_000 - 88_000)
    refunded = 88_000 + 10_001
    out["totals"] = {
        "paid_in": paid_in,
        "released": released,
        "refunded": refunded,
        "held": 1_000,
        "escrow": paid_in - released - refunded,
    }
    return out


# ---- health, complaints and alerts factories (api_tests/test_health_*.py, test_complaints*.py, test_alerts*.py) ----


async def health(client: httpx.AsyncClient, merchant: dict) -> dict:
    """The merchant's public health code (anyone may read it)."""
    r = await client.get(f"/v1/merchants/{merchant['id']}/health")
    assert r.status_code == 200, r.text
    return r.json()


async def file_complaint(
    client: httpx.AsyncClient,
    consumer: dict,
    merchant: dict,
    card: dict | None = None,
    category: str = "service_quality",
    text: str = "The coach never showed up. 教练没来。",
) -> dict:
    body = {"merchant_id": merchant["id"], "category": category, "text": text}
    if card is not None:
        body["card_id"] = card["id"]
    r = await client.post("/v1/complaints", json=body, headers=consumer["headers"])
    assert r.status_code == 201, r.text
    return r.json()


async def poll_alerts(
    client: httpx.AsyncClient, regulator: dict, after: str | None = None, wait: float = 0, limit: int = 100
) -> dict:
    params: dict = {"limit": limit, "wait": wait}
    if after is not None:
        params["after"] = after
    r = await client.get("/v1/alerts", params=params, headers=regulator["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def all_alerts(client: httpx.AsyncClient, regulator: dict, merchant: dict | None = None) -> list[dict]:
    """Every alert so far (optionally one merchant's), oldest first, following the cursor."""
    items, after = [], None
    while True:
        body = await poll_alerts(client, regulator, after=after, limit=3)
        items.extend(body["items"])
        if not body["items"]:
            break
        after = body["next_cursor"]
    return [a for a in items if merchant is None or a["merchant_id"] == merchant["id"]]


async def put_policy(client: httpx.AsyncClient, changes: dict, expect: int = 200) -> dict:
    r = await client.put("/v1/risk/policy", json=changes, headers=OP)
    assert r.status_code == expect, r.text
    return r.json()


async def my_merchant(client: httpx.AsyncClient, merchant: dict) -> dict:
    r = await client.get("/v1/merchants/me", headers=merchant["headers"])
    assert r.status_code == 200, r.text
    return r.json()


# ---- reliability and security factories (api_tests/test_authz_matrix.py, test_hostile_input.py, test_privacy.py) ----


def serving_routes(app) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, walking included routers (FastAPI ≥ 0.16x includes them lazily)."""
    found: list[tuple[str, str]] = []

    def walk(routes):
        for route in routes:
            if hasattr(route, "effective_route_contexts"):
                for context in route.effective_route_contexts():
                    for method in getattr(context.original_route, "methods", None) or ():
                        found.append((method, context.path))
            elif hasattr(route, "path"):
                for method in getattr(route, "methods", None) or ():
                    found.append((method, route.path))

    walk(app.routes)
    return [(m, p) for m, p in found if m != "HEAD"]


def client_at(app, host: str, port: int = 40000) -> httpx.AsyncClient:
    """A client whose requests come from `host` (the registration limit is per address)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, port)), base_url="http://escrow.test")


# ---- health-code defences (issue 12, part B) ------------------------------------------------


async def customer_of(
    client: httpx.AsyncClient, merchant: dict, name: str = "Customer 顾客", price: int = 10_000
) -> dict:
    """A consumer holding a card of the merchant (in `["card"]`): only such consumers' complaints count
    toward the merchant's health code, once each (SPEC §3)."""
    product = await publish_stored_value(client, merchant, price=price, face_value=price)
    consumer = await register_consumer(client, name)
    consumer["card"] = await buy_card(client, consumer, product)
    return consumer
