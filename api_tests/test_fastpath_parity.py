"""The redemption fast path answers as FastAPI's own routes would (service/redemptions/fastpath.py).

The same story of asks and confirms is told twice on an emptied database: once served as in production
(the fast path in front of FastAPI), once by FastAPI alone (ESCROW_FASTPATH=false). Ids and times differ
between the two tellings; everything else must not: each answer's status, its body (ids and times
normalised, error codes and messages exactly), its Idempotent-Replayed header, and the ledger entries
the story wrote. The served run also shows which requests the fast path answered itself and which it
handed to FastAPI, so the comparison is not between FastAPI and itself.

At the end of the module, the redemption and idempotency story tests of other modules run again with
FastAPI alone, so that its ask and confirm routes are exercised by more than this story.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from sqlalchemy import text

from api_tests import test_idempotency, test_redemption_states, test_release_shares
from api_tests.conftest import reset_database
from api_tests.factories import (
    bearer,
    buy_card,
    create_merchant,
    publish_count,
    publish_stored_value,
    register_consumer,
    serving_routes,
)
from service.app import asgi_app
from service.http.middleware import MAX_BODY
from service.redemptions.fastpath import ASK_BODY, CONFIRM_BODY, RedemptionFastPath


class Seen:
    """The FastAPI app, noting each request that reaches it."""

    def __init__(self, app):
        self.app = app
        self.count = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.count += 1
        await self.app(scope, receive, send)


@dataclass
class Teller:
    """Sends a story's requests and notes their answers, normalised, and who answered them."""

    client: httpx.AsyncClient
    seen: Seen
    answers: list[tuple] = field(default_factory=list)
    fast: list[tuple[str, bool]] = field(default_factory=list)  # (label, answered by the fast path)

    async def post(self, label: str, path: str, party: dict | None = None, key: str | None = None, **kwargs):
        headers = dict(party["headers"]) if party else {}
        headers.update(kwargs.pop("headers", {}))
        if key is not None:
            headers["Idempotency-Key"] = key
        before = self.seen.count
        r = await self.client.post(path, headers=headers, **kwargs)
        self.fast.append((label, self.seen.count == before))
        assert r.headers["content-type"] == "application/json", (label, r.headers)
        self.answers.append((label, r.status_code, normalised(r.json()), r.headers.get("idempotent-replayed")))
        return r.json()


def normalised(value, key: str = ""):
    """Ids and times replaced by placeholders (they differ between two tellings); all else kept."""
    if isinstance(value, dict):
        return {k: normalised(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, str) and (key == "id" or key.endswith("_id")):
        return "<id>"
    if isinstance(value, str) and (key == "time" or key.endswith("_at")):
        return "<time>"
    return value


async def the_story(t: Teller) -> None:
    c = t.client
    gym = await create_merchant(c)
    rival = await create_merchant(c, name="Rival Gym 对手健身")
    li = await register_consumer(c)
    han = await register_consumer(c, name="Han Meimei 韩梅梅")
    value = await buy_card(c, li, await publish_stored_value(c, gym, price=100_000, face_value=120_000))
    count = await buy_card(c, li, await publish_count(c, gym, price=30_000, uses=10))
    ask_value = f"/v1/cards/{value['id']}/redemptions"
    ask_count = f"/v1/cards/{count['id']}/redemptions"

    # A good ask and its confirm; the confirm again, and by another consumer.
    first = await t.post("ask", ask_value, gym, json={"amount": 24_000})
    confirm = f"/v1/redemptions/{first['id']}/confirm"
    await t.post("confirm by another consumer", confirm, han)
    await t.post("confirm by the merchant", confirm, gym)
    await t.post("confirm without a token", confirm)
    await t.post("confirm", confirm, li)
    await t.post("confirm twice", confirm, li)

    # The service's rules: over the balance, the wrong unit, another merchant's card, the wrong role.
    await t.post("ask over the balance", ask_value, gym, json={"amount": 96_001})
    await t.post("ask in uses on a stored-value card", ask_value, gym, json={"uses": 2})
    await t.post("ask on another merchant's card", ask_value, rival, json={"amount": 100})
    await t.post("ask by a consumer", ask_value, li, json={"amount": 100})
    await t.post("ask with a bad token", ask_value, json={"amount": 100}, headers=bearer("nope"))
    await t.post("ask on no card", "/v1/cards/crd_none/redemptions", gym, json={"amount": 100})

    # The request model's limits and types (FastAPI's 422s, whichever way the request came).
    for label, body in (
        ("amount 0", {"amount": 0}),
        ("amount negative", {"amount": -5}),
        ("amount over the limit", {"amount": 10**12 + 1}),
        ("amount at the limit", {"amount": 10**12}),
        ("amount as a string", {"amount": "5"}),
        ("amount as a float", {"amount": 5.0}),
        ("amount as a boolean", {"amount": True}),
        ("uses 0", {"uses": 0}),
        ("uses over the limit", {"uses": 100_001}),
        ("periods negative", {"periods": -1}),
        ("no unit", {}),
        ("only nulls", {"amount": None, "uses": None}),
        ("two units", {"amount": 1, "uses": 1}),
        ("an unknown field", {"amount": 1, "tip": 1}),
        ("a list", [1]),
    ):
        await t.post(f"ask with {label}", ask_value, gym, json=body)
    await t.post("ask with malformed JSON", ask_value, gym, content=b'{"amount": 1', headers=JSON)
    await t.post("ask with no body", ask_value, gym, headers=JSON)
    await t.post("ask in uses, over the card", ask_count, gym, json={"uses": 11})
    second = await t.post("ask in uses", ask_count, gym, json={"uses": 3, "amount": None})
    await t.post("confirm with an empty JSON object", f"/v1/redemptions/{second['id']}/confirm", li, json={})

    # Idempotency: a replay, a key reused with another body, a bad key.
    await t.post("keyed ask", ask_value, gym, key="ask-1", json={"amount": 1_200})
    keyed = await t.post("keyed ask replayed", ask_value, gym, key="ask-1", json={"amount": 1_200})
    await t.post("keyed ask, another body", ask_value, gym, key="ask-1", json={"amount": 2_400})
    await t.post("keyed ask, another unit", ask_value, gym, key="ask-1", json={"uses": 1})
    await t.post("ask with an overlong key", ask_value, gym, key="k" * 256, json={"amount": 1})
    keyed_confirm = f"/v1/redemptions/{keyed['id']}/confirm"
    await t.post("keyed confirm", keyed_confirm, li, key="confirm-1")
    await t.post("keyed confirm replayed", keyed_confirm, li, key="confirm-1")
    await t.post("keyed confirm, with a body now", keyed_confirm, li, key="confirm-1", json={})
    await t.post("confirm key reused on an ask", ask_value, li, key="confirm-1", json={"amount": 1})

    # The envelope: size and content type.
    await t.post("oversize ask", ask_value, gym, content=b'{"amount": 1' + b" " * MAX_BODY + b"}", headers=JSON)
    await t.post("oversize ask, chunked", ask_value, gym, content=chunks(MAX_BODY + 1), headers=JSON)
    await t.post("oversize confirm", confirm, li, content=b"{" + b" " * MAX_BODY + b"}", headers=JSON)
    await t.post("ask as text/plain", ask_value, gym, content=b'{"amount": 1}', headers=TEXT)
    await t.post("ask as form data", ask_value, gym, data={"amount": "1"})
    await t.post("ask with a JSON suffix type", ask_value, gym, content=b'{"amount": 1}', headers=JSON_SUFFIX)
    await t.post("confirm as text/plain", confirm, li, content=b"{}", headers=TEXT)
    await t.post("confirm with an unknown field", confirm, li, json={"x": 1})
    await t.post("ask with a query string", ask_value + "?x=1", gym, json={"amount": 1})


JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
JSON_SUFFIX = {"Content-Type": "application/merge-patch+json"}

# The requests of the story the fast path answers itself; the others it must hand to FastAPI.
ANSWERED_BY_THE_FAST_PATH = {
    "ask",
    "confirm by another consumer",
    "confirm by the merchant",
    "confirm without a token",
    "confirm",
    "confirm twice",
    "ask over the balance",
    "ask in uses on a stored-value card",
    "ask on another merchant's card",
    "ask by a consumer",
    "ask with a bad token",
    "ask on no card",
    "ask with amount at the limit",
    "ask in uses, over the card",
    "ask in uses",
    "confirm with an empty JSON object",
    "keyed ask",
    "keyed ask replayed",
    "keyed ask, another body",
    "keyed ask, another unit",
    "keyed confirm",
    "keyed confirm replayed",
    "keyed confirm, with a body now",
    "confirm key reused on an ask",
}


async def chunks(size: int):
    yield b'{"amount": 1'
    for _ in range(size // 4096 + 1):
        yield b" " * 4096
    yield b"}"


async def ledger(ctx) -> list[dict]:
    """Every ledger entry, in seq order, ids and times normalised."""
    async with ctx.engines.reader.connect() as conn:
        rows = (await conn.execute(text("SELECT canonical FROM ledger_entries ORDER BY seq"))).all()
    return [normalised(json.loads(r.canonical)) for r in rows]


async def tell(app, ctx, fast: bool) -> tuple[Teller, list[dict]]:
    await reset_database(ctx)
    seen = Seen(app)
    served = RedemptionFastPath(seen, app) if fast else seen
    transport = httpx.ASGITransport(app=served, client=("10.9.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://escrow.test") as client:
        teller = Teller(client, seen)
        await the_story(teller)
    return teller, await ledger(ctx)


async def test_the_fast_path_and_fastapi_answer_the_same_story_alike(app, ctx):
    served, served_ledger = await tell(app, ctx, fast=True)
    alone, alone_ledger = await tell(app, ctx, fast=False)

    assert [a[0] for a in served.answers] == [a[0] for a in alone.answers]
    for mine, theirs in zip(served.answers, alone.answers, strict=True):
        assert mine == theirs
    assert served_ledger == alone_ledger
    # The comparison means something: the fast path answered these itself, FastAPI the others.
    assert {label for label, fast in served.fast if fast} == ANSWERED_BY_THE_FAST_PATH
    assert not any(fast for _, fast in alone.fast)

    # And the story is the one intended: a few answers, as FastAPI gave them.
    by_label = {label: (status, body, replayed) for label, status, body, replayed in alone.answers}
    assert by_label["ask"][0] == 201 and by_label["ask"][1]["hold_amount"] == 20_000
    assert by_label["confirm"][1]["release_amount"] == 20_000
    assert by_label["confirm"][1]["card_balance"]["escrow"] == 80_000
    codes = {label: body["error"]["code"] for label, (status, body, _) in by_label.items() if status >= 400}
    assert codes["confirm twice"] == "redemption_not_pending"
    assert codes["confirm by another consumer"] == "redemption_not_found"
    assert codes["ask over the balance"] == "insufficient_balance"
    assert codes["ask in uses on a stored-value card"] == "wrong_unit"
    assert codes["keyed ask, another body"] == codes["keyed ask, another unit"] == "idempotency_key_reused"
    assert codes["oversize ask"] == codes["oversize ask, chunked"] == codes["oversize confirm"] == "body_too_large"
    assert codes["ask with an overlong key"] == "bad_idempotency_key"
    for label in ("amount 0", "amount negative", "amount over the limit", "amount as a string", "uses 0"):
        assert by_label[f"ask with {label}"][0] == 422, label
    assert by_label["ask with amount at the limit"][1]["error"]["code"] == "insufficient_balance"
    assert by_label["keyed ask replayed"][2] == by_label["keyed confirm replayed"][2] == "true"
    assert by_label["keyed ask replayed"][1] == by_label["keyed ask"][1]
    assert by_label["ask with a JSON suffix type"][0] == by_label["ask with a query string"][0] == 201
    kinds = [(e["kind"], e.get("amount")) for e in alone_ledger]
    assert kinds == [
        *[("merchant_onboarded", None)] * 2,
        ("purchase", 100_000),
        ("purchase", 30_000),
        ("hold", 20_000),
        ("release", 20_000),
        ("hold", 9_000),
        ("release", 9_000),
        ("hold", 1_000),
        ("release", 1_000),
        ("hold", 0),  # 1 fen of face value: the cumulative floor of its price share is 0
        ("hold", 1),
    ]


async def test_a_key_used_on_one_path_replays_on_the_other(app, ctx):
    """The fast path and the FastAPI route fingerprint a request alike: a retry that goes the other
    way (another replica, ESCROW_FASTPATH changed in between) is answered from the stored answer."""
    await reset_database(ctx)
    fast = httpx.ASGITransport(app=RedemptionFastPath(app, app), client=("10.9.0.1", 50000))
    alone = httpx.ASGITransport(app=app, client=("10.9.0.1", 50000))
    async with (
        httpx.AsyncClient(transport=fast, base_url="http://escrow.test") as f,
        httpx.AsyncClient(transport=alone, base_url="http://escrow.test") as a,
    ):
        gym = await create_merchant(f)
        li = await register_consumer(f)
        card = await buy_card(f, li, await publish_stored_value(f, gym, price=100_000, face_value=120_000))
        path = f"/v1/cards/{card['id']}/redemptions"
        for first, retry, key in ((f, a, "k-fast-first"), (a, f, "k-fastapi-first")):
            headers = {**gym["headers"], "Idempotency-Key": key}
            r1 = await first.post(path, json={"amount": 1_200}, headers=headers)
            r2 = await retry.post(path, json={"amount": 1_200}, headers=headers)
            assert r1.status_code == r2.status_code == 201, (r1.text, r2.text)
            assert r2.json() == r1.json() and r2.headers["idempotent-replayed"] == "true"
            r3 = await retry.post(path, json={"uses": 1}, headers=headers)
            assert r3.status_code == 409 and r3.json()["error"]["code"] == "idempotency_key_reused"
            confirm = f"/v1/redemptions/{r1.json()['id']}/confirm"
            c_headers = {**li["headers"], "Idempotency-Key": key}
            c1 = await first.post(confirm, headers=c_headers)
            c2 = await retry.post(confirm, json={}, headers=c_headers)  # no body and {} are the same request
            assert c1.status_code == c2.status_code == 200 and c2.json() == c1.json(), (c1.text, c2.text)
            assert c2.headers["idempotent-replayed"] == "true"
    assert [e["kind"] for e in await ledger(ctx)] == [
        "merchant_onboarded",
        "purchase",
        "hold",
        "release",
        "hold",
        "release",
    ]


def test_the_fast_path_validates_with_the_models_the_routes_declare(app):
    """If a route's request model changes, the fast path's must change with it (it imports them)."""
    declared = {}
    for route in _routes(app):
        if "POST" in route.methods and route.path.endswith(("/{card_id}/redemptions", "/{redemption_id}/confirm")):
            (body,) = route.dependant.body_params
            declared[route.path] = body.field_info.annotation
    assert declared == {
        "/v1/cards/{card_id}/redemptions": ASK_BODY,
        "/v1/redemptions/{redemption_id}/confirm": CONFIRM_BODY | None,
    }
    assert ("POST", "/v1/cards/{card_id}/redemptions") in serving_routes(app)


def _routes(app):
    for route in app.routes:
        yield from route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else (route,)


def test_escrow_fastpath_false_serves_fastapi_alone(app, ctx, monkeypatch):
    assert isinstance(asgi_app(app), RedemptionFastPath)
    monkeypatch.setattr(ctx.settings, "fastpath", False)
    assert asgi_app(app) is app


async def test_the_error_body_is_one_shape_everywhere(app, ctx):
    """The fast path's errors, the middleware's 413 and FastAPI's handlers give the same body."""
    await reset_database(ctx)
    transport = httpx.ASGITransport(app=RedemptionFastPath(app, app), client=("10.9.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://escrow.test") as c:
        answers = [
            await c.post("/v1/redemptions/rdm_none/confirm"),  # fast path: 401
            await c.post("/v1/cards/crd_x/redemptions", content=b"{" + b" " * MAX_BODY + b"}", headers=JSON),  # 413
            await c.post("/v1/cards/crd_x/redemptions", json={"amount": 0}),  # FastAPI's handlers: 401
            await c.get("/v1/no/such/route"),  # 404
        ]
    assert [r.status_code for r in answers] == [401, 413, 401, 404]
    for r in answers:
        body = orjson.loads(r.content)
        assert list(body) == ["error"] and list(body["error"]) == ["code", "message"], body
        assert all(isinstance(v, str) and v for v in body["error"].values()), body


# ---- the redemption stories again, served by FastAPI alone ---------------------------------------


@pytest.fixture
async def client(app, ctx):
    """This module's client: FastAPI alone, as with ESCROW_FASTPATH=false."""
    await reset_database(ctx)
    transport = httpx.ASGITransport(app=app, client=("10.9.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://escrow.test") as c:
        yield c


async def test_this_modules_client_is_fastapi_alone(client, app):
    assert client._transport.app is app


for _module in (test_redemption_states, test_release_shares, test_idempotency):
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and callable(_test):
            globals()[f"{_name}__fastapi_alone"] = _test
