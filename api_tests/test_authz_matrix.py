"""The authorization matrix (SPEC §1, §6): every /v1 route against every kind of caller.

One row per route says who may call it; the expected answer of each cell follows from the row:
401 with no token or a bad one on a protected route, 403 for a role that may not call it, 404 (not
403) for another party's object, the row's success status for everyone else. A route that the app
serves but the table lacks fails the test, so a new route must come with its row.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from api_tests.conftest import record
from api_tests.factories import (
    OP,
    ask,
    buy_card,
    create_auditor,
    create_merchant,
    create_party,
    create_regulator,
    customer_of,
    file_complaint,
    own_address,
    poll_alerts,
    publish_stored_value,
    register_consumer,
    serving_routes,
    sign_in,
    valid_uscc,
    verify_phone,
)
from service.webhooks.dispatcher import Dispatcher

CALLERS = (
    "none",
    "bad_token",
    "operator",
    "merchant_a",
    "merchant_b",
    "consumer_a",
    "consumer_b",
    "regulator",
    "auditor",
    "lender",
)
ROLE = {
    "operator": "operator",
    "merchant_a": "merchant",
    "merchant_b": "merchant",
    "consumer_a": "consumer",
    "consumer_b": "consumer",
    "regulator": "regulator",
    "auditor": "auditor",
    "lender": "lender",
}
OTHER_PARTY = {"merchant_b", "consumer_b"}  # the same role as the owner of the world's objects, another party
ALL_ROLES = frozenset(ROLE.values()) - {"lender"}  # a lender reads consenting merchants' credit reports, nothing else
BAD_TOKEN = {"Authorization": "Bearer cs_" + "0" * 43}

# Writes an auditor may make, and why: registering is public (the token is ignored), and asking the service
# to sign a checkpoint of the ledger as it stands is how a verifier gets a fresh tree head; it moves nothing.
AUDITOR_WRITES = {
    ("POST", "/v1/consumers"),
    ("POST", "/v1/consumers/verifications"),
    ("POST", "/v1/consumers/sessions"),
    ("POST", "/v1/ledger/checkpoints"),
}
# The auditor is the custodian bank (SPEC §12): it closes days, reports what it paid and uploads its statement.
AUDITOR_WRITES |= {
    ("POST", "/v1/settlements"),
    ("POST", "/v1/settlements/{batch_id}/results"),
    ("POST", "/v1/bank-statements"),
}
# An auditor (the bank) registers webhook endpoints of its own to learn of every release it will pay out.
AUDITOR_WRITES |= {
    ("POST", "/v1/webhook-endpoints"),
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/enable"),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry"),
}


@dataclass
class World:
    """Two merchants, two consumers, a regulator, an auditor, and objects that belong to merchant A and consumer A."""

    client: Any
    parties: dict[str, dict]
    product: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    pending: dict = field(default_factory=dict)
    complaint: dict = field(default_factory=dict)
    alert_id: str = ""
    draw_id: str = ""
    entry_seq: int = 0
    ledger_size: int = 0
    batch_id: str = ""
    statement_id: str = ""
    days_closed: int = 0

    def next_day(self) -> str:
        """A day long past that no cell has closed yet (closing answers 201 once per day)."""
        self.days_closed += 1
        return (datetime(2001, 1, 1) + timedelta(days=self.days_closed)).date().isoformat()

    endpoint: dict = field(default_factory=dict)
    delivery_id: str = ""

    def headers(self, caller: str) -> dict:
        if caller == "none":
            return {}
        if caller == "bad_token":
            return BAD_TOKEN
        return self.parties[caller]["headers"]

    # Fresh objects for the cells that succeed and change them (a card refunds once, an alert is acknowledged once).
    async def fresh_card(self) -> dict:
        return await buy_card(self.client, self.parties["consumer_a"], self.product)

    async def fresh_pending(self) -> dict:
        return await ask(self.client, self.parties["merchant_a"], self.card, amount=1)

    async def fresh_complaint(self, merchant: dict | None = None) -> dict:
        return await file_complaint(self.client, self.parties["consumer_a"], merchant or self.parties["merchant_a"])

    async def fresh_endpoint(self) -> dict:
        r = await self.client.post(
            "/v1/webhook-endpoints", json=_endpoint_body(self), headers=self.parties["merchant_a"]["headers"]
        )
        assert r.status_code == 201, r.text
        return r.json()

    async def fresh_merchant(self) -> dict:
        return await create_merchant(self.client, f"Victim {secrets.token_hex(3)}", "fitness")

    async def fresh_alert(self) -> str:
        """Five customers' complaints turn a new merchant yellow, and the change of code raises an alert."""
        merchant = await self.fresh_merchant()
        for i in range(5):  # only card holders' complaints count, once each (SPEC §3)
            await file_complaint(self.client, await customer_of(self.client, merchant, f"C{i}"), merchant)
        body = await poll_alerts(self.client, self.parties["regulator"], limit=500)
        return [a for a in body["items"] if a["merchant_id"] == merchant["id"] and a["status"] == "open"][-1]["id"]


Target = Callable[[World, bool], Awaitable[dict]]
Body = Callable[[World], Any]


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    ok: int  # the status of a caller that may make the call
    roles: frozenset[str] | None = None  # None: public, anyone may call it with or without a token
    owned: bool = False  # the path names merchant A's or consumer A's object: the other party of that role gets 404
    target: Target | None = None  # (world, succeeds) -> path parameters
    body: Body | None = None
    not_found: frozenset[str] = frozenset()  # callers of an allowed role for whom the object is another's
    fresh_body: Callable[[World], Awaitable[dict]] | None = None  # for the succeeding cells (e.g. a fresh code)
    signs_out: bool = False  # a succeeding cell spends the caller's token: it gets a freshly signed-in one
    content_type: str | None = None  # the body is sent as is, with this type (e.g. a CSV statement)

    def expected(self, caller: str) -> int:
        if self.roles is None:
            return self.ok
        if caller in ("none", "bad_token"):
            return 401
        if ROLE[caller] not in self.roles:
            return 403
        if caller in self.not_found:
            return 404
        if self.owned and caller in OTHER_PARTY:
            return 404
        return self.ok


def roles(*names: str) -> frozenset[str]:
    return frozenset(names)


async def _card(w: World, succeeds: bool) -> dict:
    return {"card_id": w.card["id"]}


async def _card_to_refund(w: World, succeeds: bool) -> dict:
    return {"card_id": (await w.fresh_card())["id"] if succeeds else w.card["id"]}


async def _pending(w: World, succeeds: bool) -> dict:
    return {"redemption_id": w.pending["id"]}


async def _pending_to_answer(w: World, succeeds: bool) -> dict:
    return {"redemption_id": (await w.fresh_pending())["id"] if succeeds else w.pending["id"]}


async def _complaint_to_answer(w: World, succeeds: bool) -> dict:
    return {"complaint_id": (await w.fresh_complaint())["id"] if succeeds else w.complaint["id"]}


async def _complaint_to_resolve(w: World, succeeds: bool) -> dict:
    if not succeeds:
        return {"complaint_id": w.complaint["id"]}
    return {"complaint_id": (await w.fresh_complaint(await w.fresh_merchant()))["id"]}


async def _merchant_a(w: World, succeeds: bool) -> dict:
    return {"merchant_id": w.parties["merchant_a"]["id"]}


async def _victim(w: World, succeeds: bool) -> dict:
    return {"merchant_id": (await w.fresh_merchant())["id"] if succeeds else w.parties["merchant_a"]["id"]}


async def _alert(w: World, succeeds: bool) -> dict:
    return {"alert_id": await w.fresh_alert() if succeeds else w.alert_id}


async def _product(w: World, succeeds: bool) -> dict:
    return {"product_id": w.product["id"]}


async def _draw(w: World, succeeds: bool) -> dict:
    return {"draw_id": w.draw_id}


async def _entry(w: World, succeeds: bool) -> dict:
    return {"seq": w.entry_seq}


async def _batch(w: World, succeeds: bool) -> dict:
    return {"batch_id": w.batch_id}


async def _statement(w: World, succeeds: bool) -> dict:
    return {"statement_id": w.statement_id}


STATEMENT = "date,direction,amount,reference\n2026-12-01,credit,100,alipay:matrix-nobody\n"


async def _endpoint(w: World, succeeds: bool) -> dict:
    return {"endpoint_id": w.endpoint["id"]}


async def _endpoint_to_delete(w: World, succeeds: bool) -> dict:
    return {"endpoint_id": (await w.fresh_endpoint())["id"] if succeeds else w.endpoint["id"]}


async def _delivery(w: World, succeeds: bool) -> dict:
    return {"endpoint_id": w.endpoint["id"], "delivery_id": w.delivery_id}


def _endpoint_body(w: World) -> dict:
    return {"url": "http://127.0.0.1:9/hooks", "event_types": ["*"]}


def _merchant_body(w: World) -> dict:
    return {"name": f"New shop {secrets.token_hex(3)}", "uscc": valid_uscc(), "category": "beauty"}


def _new_phone() -> str:
    return "139" + "".join(secrets.choice("0123456789") for _ in range(8))


def _consumer_body(w: World) -> dict:
    return {"name": "Wang Wu 王五", "phone": _new_phone(), "verification_id": "vrf_0", "code": "000000"}


def _session_body(w: World) -> dict:
    return {"phone": _new_phone(), "verification_id": "vrf_0", "code": "000000"}


async def _fresh_consumer_body(w: World) -> dict:
    phone = _new_phone()
    async with own_address(w.client) as own:
        verification_id, code = await verify_phone(own, phone, reader=w.client)
    return {"name": "Wang Wu 王五", "phone": phone, "verification_id": verification_id, "code": code}


async def _fresh_session_body(w: World) -> dict:
    consumer = await register_consumer(w.client, "Zhao Liu 赵六")
    async with own_address(w.client) as own:
        verification_id, code = await verify_phone(own, consumer["phone"], reader=w.client)
    return {"phone": consumer["phone"], "verification_id": verification_id, "code": code}


async def _keyed_party(w: World, succeeds: bool) -> dict:
    """A merchant whose keys may end: a fresh one for each succeeding cell, one spare for the others (never
    merchant A, whose key the other rows use)."""
    if succeeds:
        return {"party_id": (await w.fresh_merchant())["id"]}
    if "spare_merchant" not in w.parties:
        w.parties["spare_merchant"] = await w.fresh_merchant()
    return {"party_id": w.parties["spare_merchant"]["id"]}


def _product_body(w: World) -> dict:
    return {"type": "count", "name": "10次卡", "price": 10_000, "uses": 10, "valid_days": 365}


def _purchase_body(w: World) -> dict:
    return {"product_id": w.product["id"], "payment": {"method": "alipay", "reference": f"ali-{secrets.token_hex(6)}"}}


def _complaint_body(w: World) -> dict:
    return {"merchant_id": w.parties["merchant_a"]["id"], "category": "other", "text": "Rude staff. 态度差。"}


def _clock_body(w: World) -> dict:
    return {"now": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}


def _closure_body(w: World) -> dict:
    return {"effective_date": (datetime.now(UTC) + timedelta(days=45)).isoformat(), "reason": "Moving away."}


REGULATORS = roles("regulator", "operator")
WEBHOOK_OWNERS = roles("merchant", "regulator", "auditor", "operator")
NOT_MERCHANT_AS_ENDPOINT = frozenset({"merchant_b", "regulator", "auditor", "operator"})  # merchant A's endpoint
EVERYONE_SIGNED_IN = ALL_ROLES
CARD_READERS = roles("consumer", "merchant", "regulator", "auditor", "operator")

TABLE: tuple[Row, ...] = (
    Row("GET", "/v1/ping", 200, EVERYONE_SIGNED_IN),
    Row("POST", "/v1/test/clock", 200, roles("operator"), body=_clock_body),
    # parties
    Row("POST", "/v1/merchants", 201, roles("operator"), body=_merchant_body),
    Row("POST", "/v1/regulators", 201, roles("operator"), body=lambda w: {"name": "Rongcheng AMR"}),
    Row("POST", "/v1/auditors", 201, roles("operator"), body=lambda w: {"name": "Second bank"}),
    Row("POST", "/v1/consumers/verifications", 202, None, body=lambda w: {"phone": _new_phone()}),
    Row("POST", "/v1/consumers", 201, None, body=_consumer_body, fresh_body=_fresh_consumer_body),
    Row("POST", "/v1/consumers/sessions", 201, None, body=_session_body, fresh_body=_fresh_session_body),
    Row("DELETE", "/v1/consumers/me/tokens/current", 204, roles("consumer"), signs_out=True),
    Row("GET", "/v1/test/sms", 200, roles("operator")),
    Row("POST", "/v1/keys/{party_id}/rotate", 201, roles("operator"), target=_keyed_party),  # the body is optional
    Row("POST", "/v1/keys/{party_id}/revoke", 200, roles("operator"), target=_keyed_party),
    Row("GET", "/v1/merchants/me", 200, roles("merchant")),
    Row("GET", "/v1/merchants/me/cards", 200, roles("merchant")),
    Row("GET", "/v1/merchants/me/stats", 200, roles("merchant")),
    Row("GET", "/v1/consumers/me", 200, roles("consumer")),
    Row("GET", "/v1/consumers/me/cards", 200, roles("consumer")),
    Row("GET", "/v1/consumers/me/redemptions", 200, roles("consumer")),
    # products and cards
    Row("POST", "/v1/products", 201, roles("merchant"), body=_product_body),
    Row("GET", "/v1/products", 200),
    Row("GET", "/v1/products/{product_id}", 200, target=_product),
    Row("POST", "/v1/cards", 201, roles("consumer"), body=_purchase_body),
    Row("GET", "/v1/cards/{card_id}", 200, CARD_READERS, owned=True, target=_card),
    Row(
        "POST",
        "/v1/cards/{card_id}/redemptions",
        201,
        roles("merchant"),
        owned=True,
        target=_card,
        body=lambda w: {"amount": 1},
    ),
    Row("POST", "/v1/cards/{card_id}/refund", 200, roles("consumer"), owned=True, target=_card_to_refund),
    Row("GET", "/v1/cards/{card_id}/refund-quote", 200, roles("consumer"), owned=True, target=_card),
    # redemptions
    Row("GET", "/v1/redemptions/{redemption_id}", 200, CARD_READERS, owned=True, target=_pending),
    Row(
        "POST", "/v1/redemptions/{redemption_id}/confirm", 200, roles("consumer"), owned=True, target=_pending_to_answer
    ),
    Row(
        "POST", "/v1/redemptions/{redemption_id}/reject", 200, roles("consumer"), owned=True, target=_pending_to_answer
    ),
    Row(
        "POST", "/v1/redemptions/{redemption_id}/cancel", 200, roles("merchant"), owned=True, target=_pending_to_answer
    ),
    # regulatory acts on merchants
    Row(
        "POST",
        "/v1/merchants/{merchant_id}/default",
        200,
        REGULATORS,
        target=_victim,
        body=lambda w: {"reason": "Ran away 跑路"},
    ),
    Row(
        "POST",
        "/v1/merchants/{merchant_id}/abnormal-list",
        200,
        REGULATORS,
        target=_victim,
        body=lambda w: {"listed": True, "reason": "Address unreachable"},
    ),
    Row(
        "POST",
        "/v1/merchants/{merchant_id}/delisting",
        200,
        REGULATORS,
        target=_victim,
        body=lambda w: {"listed": True, "reason": "Red code"},
    ),
    # complaints
    Row("POST", "/v1/complaints", 201, roles("consumer"), body=_complaint_body),
    Row("GET", "/v1/complaints", 200, roles("consumer", "merchant", "regulator", "operator")),
    Row(
        "POST",
        "/v1/complaints/{complaint_id}/response",
        200,
        roles("merchant"),
        owned=True,
        target=_complaint_to_answer,
        body=lambda w: {"text": "We apologise. 抱歉。"},
    ),
    Row(
        "POST",
        "/v1/complaints/{complaint_id}/resolution",
        200,
        REGULATORS,
        target=_complaint_to_resolve,
        body=lambda w: {"resolution": "mediated", "note": "Refund agreed."},
    ),
    # health, alerts, policy, inspections
    Row("GET", "/v1/merchants/{merchant_id}/health", 200, target=_merchant_a),
    Row("GET", "/v1/merchants", 200),
    Row("GET", "/v1/alerts", 200, REGULATORS),
    Row("POST", "/v1/alerts/{alert_id}/acknowledge", 200, REGULATORS, target=_alert),
    Row(
        "POST",
        "/v1/alerts/{alert_id}/resolve",
        200,
        REGULATORS,
        target=_alert,
        body=lambda w: {"finding": "Visited the shop; it is open."},
    ),
    Row("GET", "/v1/risk/policy", 200, REGULATORS),
    Row("PUT", "/v1/risk/policy", 200, roles("operator"), body=lambda w: {}),
    Row("POST", "/v1/inspections/draws", 201, REGULATORS, body=lambda w: {"inspectors": ["Zhang 张", "Zhao 赵"]}),
    Row("GET", "/v1/inspections/draws/{draw_id}", 200, target=_draw),
    # the ledger
    Row("GET", "/v1/ledger/checkpoint", 200),
    Row("POST", "/v1/ledger/checkpoints", 201, EVERYONE_SIGNED_IN),
    Row("GET", "/v1/ledger/public-key", 200),
    Row("GET", "/v1/ledger/entries", 200, EVERYONE_SIGNED_IN),
    Row("GET", "/v1/ledger/entries/{seq}", 200, EVERYONE_SIGNED_IN, owned=True, target=_entry),
    Row("GET", "/v1/ledger/entries/{seq}/proof", 200, target=_entry),
    Row("GET", "/v1/ledger/consistency", 200),
    Row("GET", "/v1/ledger/witnesses", 200),
    Row("GET", "/v1/ledger/entries/{seq}/receipt", 200, target=_entry),
    Row("GET", "/v1/escrow/reconciliation", 200, roles("auditor", "regulator", "operator")),
    # custody and credit (SPEC §12)
    Row("POST", "/v1/settlements", 201, roles("auditor", "operator"), body=lambda w: {"date": w.next_day()}),
    Row("GET", "/v1/settlements", 200, roles("auditor", "operator", "regulator")),
    Row("GET", "/v1/settlements/instructions", 200, roles("auditor", "operator", "regulator")),
    Row("GET", "/v1/settlements/{batch_id}", 200, roles("auditor", "operator", "regulator"), target=_batch),
    Row(
        "POST",
        "/v1/settlements/{batch_id}/results",
        200,
        roles("auditor"),
        target=_batch,
        body=lambda w: {"results": []},
    ),
    Row("POST", "/v1/bank-statements", 201, roles("auditor"), body=lambda w: STATEMENT, content_type="text/csv"),
    Row("GET", "/v1/bank-statements/{statement_id}", 200, roles("auditor", "operator", "regulator"), target=_statement),
    Row("POST", "/v1/lenders", 201, roles("operator"), body=lambda w: {"name": "Loan desk 信贷部"}),
    Row("POST", "/v1/merchants/me/credit-consent", 200, roles("merchant"), body=lambda w: {"consent": True}),
    Row("GET", "/v1/credit/merchants", 200, roles("lender")),
    Row("GET", "/v1/credit/merchants/{merchant_id}", 200, roles("lender"), target=_merchant_a),
    # events and webhooks
    Row("GET", "/v1/events", 200, EVERYONE_SIGNED_IN),
    Row("POST", "/v1/webhook-endpoints", 201, WEBHOOK_OWNERS, body=_endpoint_body),
    Row("GET", "/v1/webhook-endpoints", 200, WEBHOOK_OWNERS),
    Row(
        "GET",
        "/v1/webhook-endpoints/{endpoint_id}",
        200,
        WEBHOOK_OWNERS,
        target=_endpoint,
        not_found=NOT_MERCHANT_AS_ENDPOINT,
    ),
    Row(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
        200,
        WEBHOOK_OWNERS,
        target=_endpoint,
        not_found=NOT_MERCHANT_AS_ENDPOINT,
    ),
    Row(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/enable",
        200,
        WEBHOOK_OWNERS,
        target=_endpoint,
        not_found=NOT_MERCHANT_AS_ENDPOINT,
    ),
    Row(
        "GET",
        "/v1/webhook-endpoints/{endpoint_id}/deliveries",
        200,
        WEBHOOK_OWNERS,
        target=_endpoint,
        not_found=NOT_MERCHANT_AS_ENDPOINT,
    ),
    Row(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry",
        202,
        WEBHOOK_OWNERS,
        target=_delivery,
        not_found=NOT_MERCHANT_AS_ENDPOINT,
    ),
    Row(
        "DELETE",
        "/v1/webhook-endpoints/{endpoint_id}",
        200,
        WEBHOOK_OWNERS,
        target=_endpoint_to_delete,
        not_found=NOT_MERCHANT_AS_ENDPOINT,
    ),
    # last: a merchant that announced closure sells nothing more, and the rows above buy from merchant A
    Row("POST", "/v1/merchants/me/closure", 200, roles("merchant"), body=_closure_body),
)

QUERIES = {
    "/v1/ledger/consistency": lambda w: {"first": 1, "second": w.ledger_size},
    "/v1/test/sms": lambda w: {"phone": w.parties["consumer_a"]["phone"]},
    "/v1/ledger/entries/{seq}/proof": lambda w: {"tree_size": w.ledger_size},
}


async def build_world(client) -> World:
    parties = {
        "operator": {"headers": OP},
        "merchant_a": await create_merchant(client, "Iron Gym 铁馆健身"),
        "merchant_b": await create_merchant(client, "Rival Gym 对手健身"),
        "consumer_a": await register_consumer(client, "Li Lei 李雷"),
        "consumer_b": await register_consumer(client, "Han Meimei 韩梅梅"),
        "regulator": await create_regulator(client),
        "auditor": await create_auditor(client),
        "lender": await create_party(client, "lenders", "Industrial Bank loans 兴业银行信贷部"),
    }
    w = World(client, parties)
    w.product = await publish_stored_value(client, parties["merchant_a"], price=100_000, face_value=120_000)
    w.card = await w.fresh_card()
    w.pending = await w.fresh_pending()
    w.complaint = await w.fresh_complaint()
    w.alert_id = await w.fresh_alert()
    r = await client.post("/v1/inspections/draws", json={"inspectors": ["Zhang 张"]}, headers=OP)
    assert r.status_code == 201, r.text
    w.draw_id = r.json()["id"]
    r = await client.get("/v1/ledger/entries", params={"limit": 1}, headers=parties["consumer_a"]["headers"])
    w.entry_seq = r.json()["items"][0]["seq"]
    r = await client.post("/v1/ledger/checkpoints", headers=OP)
    w.ledger_size = r.json()["tree_size"]
    r = await client.post(
        "/v1/merchants/me/credit-consent", json={"consent": True}, headers=parties["merchant_a"]["headers"]
    )
    assert r.status_code == 200, r.text
    r = await client.post("/v1/settlements", json={"date": "2001-01-01"}, headers=OP)
    assert r.status_code == 201, r.text
    w.batch_id = r.json()["id"]
    r = await client.post(
        "/v1/bank-statements",
        content=STATEMENT.encode(),
        headers={**parties["auditor"]["headers"], "Content-Type": "text/csv"},
    )
    assert r.status_code == 201, r.text
    w.statement_id = r.json()["id"]
    w.endpoint = await w.fresh_endpoint()
    await w.fresh_card()  # an event for merchant A's endpoint: one delivery (fanned out, not sent)
    await Dispatcher(client._transport.app.fastapi_app.state.ctx).step(claim=False)
    r = await client.get(
        f"/v1/webhook-endpoints/{w.endpoint['id']}/deliveries", headers=parties["merchant_a"]["headers"]
    )
    w.delivery_id = r.json()["items"][0]["id"]
    return w


def test_the_table_covers_every_v1_route(app):
    served = {(m, p) for m, p in serving_routes(app) if p.startswith("/v1/")}
    table = {(row.method, row.path) for row in TABLE}
    assert len(table) == len(TABLE), "a route has two rows"
    assert served - table == set(), f"routes without a row in the authorization matrix: {sorted(served - table)}"
    assert table - served == set(), f"rows for routes the app does not serve: {sorted(table - served)}"


def test_the_table_says_what_the_spec_says():
    by_route = {(row.method, row.path): row for row in TABLE}
    for method, path in (
        ("POST", "/v1/cards"),
        ("POST", "/v1/cards/{card_id}/redemptions"),
        ("POST", "/v1/redemptions/{redemption_id}/confirm"),
        ("POST", "/v1/cards/{card_id}/refund"),
    ):
        assert by_route[method, path].expected("regulator") == 403, "a regulator never moves money"
    for row in TABLE:
        if row.method in ("POST", "PUT", "PATCH", "DELETE") and (row.method, row.path) not in AUDITOR_WRITES:
            assert row.expected("auditor") == 403, f"an auditor only reads: {row.method} {row.path}"
        if row.roles is not None:
            assert row.expected("none") == row.expected("bad_token") == 401


async def test_every_caller_gets_the_documented_answer_on_every_route(client, capsys):
    w = await build_world(client)
    cells, wrong = 0, []
    for row in TABLE:
        for caller in CALLERS:
            expect = row.expected(caller)
            params = await row.target(w, expect == row.ok) if row.target else {}
            url = row.path.format(**params)
            body = row.body(w) if row.body else None
            if row.fresh_body and expect == row.ok:
                body = await row.fresh_body(w)
            query = QUERIES[row.path](w) if row.path in QUERIES else None
            headers = w.headers(caller)
            if row.signs_out and expect == row.ok:
                headers = (await sign_in(client, w.parties[caller]["phone"]))["headers"]
            if row.content_type:
                r = await client.request(
                    row.method, url, content=body, params=query, headers={**headers, "Content-Type": row.content_type}
                )
            else:
                r = await client.request(row.method, url, json=body, params=query, headers=headers)
            cells += 1
            if r.status_code != expect:
                wrong.append(f"{row.method} {row.path} as {caller}: {r.status_code}, expected {expect}: {r.text[:200]}")
            elif expect >= 400:
                error = r.json()["error"]
                assert error["code"] and error["message"], r.text
    assert not wrong, f"{len(wrong)} of {cells} cells differ:\n" + "\n".join(wrong)
    assert cells == len(TABLE) * len(CALLERS)
    record("matrix cells", cells)
    with capsys.disabled():
        print(
            f"\nauthorization matrix: {cells} cells checked ({len(TABLE)} routes x {len(CALLERS)} callers), "
            "all as documented"
        )


def test_the_openapi_document_declares_every_refusal_the_matrix_expects(app):
    paths = app.openapi()["paths"]
    missing = []
    for row in TABLE:
        declared = set(paths[row.path][row.method.lower()]["responses"])
        for status in {row.expected(caller) for caller in CALLERS}:
            if str(status) not in declared:
                missing.append(f"{row.method} {row.path}: {status}")
    assert not missing, "statuses the route answers but its responses= does not declare:\n" + "\n".join(missing)
