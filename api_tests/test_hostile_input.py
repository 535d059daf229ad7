"""Hostile input on every route: whatever arrives, the answer is a clean 4xx with the SPEC §5 error body,
never a 500, on SQLite and on PostgreSQL alike (PostgreSQL refuses U+0000 in text, so NUL must be a 422
before it reaches the database).

The routes, their callers and a valid body for each come from the authorization matrix's table.
"""

from __future__ import annotations

from api_tests.conftest import record
from api_tests.factories import (
    OP,
    assert_error,
    buy_card,
    create_merchant,
    publish_stored_value,
    register_consumer,
    valid_uscc,
)
from api_tests.test_authz_matrix import QUERIES, ROLE, TABLE, Row, World, build_world

JSON = {"Content-Type": "application/json"}
NUL_STRINGS = ("\u0000", "nul\u0000inside", "trailing nul\u0000")
UNICODE_NAMES = (
    "\u202eRTL override 覆盖",
    "\u200fمتجر\u200f",
    "family 👨\u200d👩\u200d👧 zwj",
    "🏋️‍♀️💪🔥",
    "\u200bzero\u200cwidth\u200d",
    "e\u0301\u0301\u0301",
    "\ufeffBOM",
    "𠜎𠜱𠝹",
)
HOSTILE_VALUES = (
    None,
    0,
    -1,
    -(10**30),
    10**30,
    1.5,
    100.0,
    1e308,
    "12",
    "",
    " ",
    "x" * 5000,
    True,
    [],
    [None],
    {},
    {"$gt": ""},
    {"a": {"b": [[[{"c": None}]]]}},
    "\u0000",
    "a\u0000b",
    "%00",
    "'; DROP TABLE cards; --",
)


def caller_for(row: Row) -> str:
    """A caller the row admits (merchant A or consumer A for the owned objects)."""
    if row.roles is None:
        return "none"
    for caller in ("operator", "merchant_a", "consumer_a", "regulator", "auditor", "lender"):
        if ROLE[caller] in row.roles:
            return caller
    raise AssertionError(row)


def body_rows() -> list[Row]:
    # (a CSV body, e.g. the bank statement, is no JSON object to fill with garbage: test_settlements.py)
    return [row for row in TABLE if row.method in ("POST", "PUT") and row.body is not None and row.content_type is None]


async def url_for(w: World, row: Row, fresh: bool = False) -> str:
    return row.path.format(**(await row.target(w, fresh) if row.target else {}))


def assert_clean(r, context: str) -> None:
    """Not a server error, and a 4xx carries exactly the error body."""
    assert r.status_code < 500, f"{context}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, f"{context}: {r.text[:300]}"
        assert body["error"]["code"] and body["error"]["message"], context


async def test_every_field_of_every_body_survives_hostile_values(client):
    """Each top-level field of each route's valid body replaced by garbage: never a 5xx; NUL in a field is 422."""
    w = await build_world(client)
    sent = 0
    for row in body_rows():
        caller = caller_for(row)
        valid = row.body(w)
        fields = list(valid) or ["unexpected"]
        for name in fields:
            for value in HOSTILE_VALUES:
                body = {**valid, name: value}
                r = await client.request(row.method, await url_for(w, row), json=body, headers=w.headers(caller))
                sent += 1
                context = f"{row.method} {row.path} {name}={value!r:.40}"
                assert_clean(r, context)
                if isinstance(value, str) and "\u0000" in value:
                    assert_error(r, 422)
    assert sent > 500
    record("hostile inputs per field", len(HOSTILE_VALUES))
    record("hostile requests", sent)


async def _shop_with_a_card(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    return gym, li, product, await buy_card(client, li, product)


async def test_nul_in_any_text_field_is_422_on_either_database(client):
    gym, li, product, card = await _shop_with_a_card(client)
    regulator = (await client.post("/v1/regulators", json={"name": "AMR"}, headers=OP)).json()
    rg = {"Authorization": f"Bearer {regulator['api_key']}"}
    complaint = (
        await client.post(
            "/v1/complaints",
            json={"merchant_id": gym["id"], "category": "other", "text": "late"},
            headers=li["headers"],
        )
    ).json()
    for nul in NUL_STRINGS:
        for method, url, headers, body in (
            ("POST", "/v1/merchants", OP, {"name": nul, "uscc": "91350100M000100Y43", "category": "gym"}),
            ("POST", "/v1/merchants", OP, {"name": "Gym", "uscc": nul, "category": "gym"}),
            ("POST", "/v1/merchants", OP, {"name": "Gym", "uscc": "91350100M000100Y43", "category": nul}),
            ("POST", "/v1/regulators", OP, {"name": nul}),
            ("POST", "/v1/auditors", OP, {"name": nul}),
            (
                "POST",
                "/v1/consumers",
                {},
                {"name": nul, "phone": "13912345678", "verification_id": "vrf_x", "code": "123456"},
            ),
            (
                "POST",
                "/v1/consumers",
                {},
                {"name": "Li", "phone": "1391234567" + nul, "verification_id": "vrf_x", "code": "123456"},
            ),
            (
                "POST",
                "/v1/consumers",
                {},
                {"name": "Li", "phone": "13912345678", "verification_id": "vrf_" + nul, "code": "123456"},
            ),
            ("POST", "/v1/consumers/verifications", {}, {"phone": "1391234567" + nul}),
            ("POST", "/v1/consumers/sessions", {}, {"phone": "13912345678", "verification_id": nul, "code": "123456"}),
            (
                "POST",
                "/v1/products",
                gym["headers"],
                {"type": "count", "name": nul, "price": 100, "uses": 1, "valid_days": 9},
            ),
            (
                "POST",
                "/v1/cards",
                li["headers"],
                {"product_id": product["id"] + nul, "payment": {"method": "alipay", "reference": "r"}},
            ),
            (
                "POST",
                "/v1/cards",
                li["headers"],
                {"product_id": product["id"], "payment": {"method": "alipay", "reference": nul}},
            ),
            ("POST", "/v1/complaints", li["headers"], {"merchant_id": gym["id"], "category": "other", "text": nul}),
            ("POST", "/v1/complaints", li["headers"], {"merchant_id": nul, "category": "other", "text": "x"}),
            (
                "POST",
                "/v1/complaints",
                li["headers"],
                {"merchant_id": gym["id"], "card_id": nul, "category": "other", "text": "x"},
            ),
            ("POST", f"/v1/complaints/{complaint['id']}/response", gym["headers"], {"text": nul}),
            ("POST", f"/v1/complaints/{complaint['id']}/resolution", rg, {"resolution": "upheld", "note": nul}),
            ("POST", "/v1/alerts/alr_x/resolve", rg, {"finding": nul}),
            ("POST", f"/v1/merchants/{gym['id']}/default", rg, {"reason": nul}),
            ("POST", f"/v1/merchants/{gym['id']}/abnormal-list", rg, {"listed": True, "reason": nul}),
            ("POST", f"/v1/merchants/{gym['id']}/delisting", rg, {"listed": True, "reason": nul}),
            (
                "POST",
                "/v1/merchants/me/closure",
                gym["headers"],
                {"effective_date": "2099-01-01T00:00:00Z", "reason": nul},
            ),
            ("POST", "/v1/inspections/draws", rg, {"inspectors": [nul]}),
            ("POST", "/v1/inspections/draws", rg, {"inspectors": ["Zhang"], "seed": nul}),
            ("PUT", "/v1/risk/policy", OP, {nul: 1}),
        ):
            r = await client.request(method, url, json=body, headers=headers)
            assert_error(r, 422)
    assert (await client.get(f"/v1/cards/{card['id']}", headers=li["headers"])).json()["status"] == "active"
    assert (await client.get("/v1/merchants/me", headers=gym["headers"])).json()["status"] == "active"


async def test_unicode_edge_cases_round_trip_in_every_name(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    for name in UNICODE_NAMES:
        r = await client.post(
            "/v1/products",
            json={"type": "count", "name": name, "price": 100, "uses": 1, "valid_days": 9},
            headers=gym["headers"],
        )
        assert r.status_code == 201, r.text
        assert (await client.get(f"/v1/products/{r.json()['id']}")).json()["name"] == name.strip()
        for kind in ("regulators", "auditors"):
            r = await client.post(f"/v1/{kind}", json={"name": name}, headers=OP)
            assert r.status_code == 201 and r.json()["name"] == name.strip(), r.text
        r = await client.post(
            "/v1/complaints", json={"merchant_id": gym["id"], "category": "other", "text": name}, headers=li["headers"]
        )
        assert r.status_code == 201 and r.json()["text"] == name.strip(), r.text
        r = await client.post("/v1/merchants", json={"name": name, "uscc": valid_uscc(), "category": name}, headers=OP)
        assert r.status_code == 201 and r.json()["name"] == name.strip(), r.text
        consumer = await register_consumer(client, name)
        assert consumer["name"] == name.strip(), consumer
        me = await client.get("/v1/consumers/me", headers=consumer["headers"])
        assert me.json()["name"] == name.strip()


async def test_nul_and_garbage_in_paths_and_queries_is_a_clean_4xx(client, app):
    w = await build_world(client)
    openapi = app.openapi()["paths"]
    for row in TABLE:
        caller = caller_for(row)
        if "{" in row.path:
            for garbage in (
                "%00",
                "a%00b",
                "x" * 5000,
                "%F0%9F%92%A9%E2%80%8F",
                "%27%20OR%201%3D1--",
                "99999999999999999999999999999999",
            ):
                url = row.path.replace(row.path[row.path.index("{") : row.path.index("}") + 1], garbage)
                body = row.body(w) if row.body else None
                r = await client.request(row.method, url, json=body, headers=w.headers(caller))
                assert_clean(r, f"{row.method} {url[:80]}")
                assert 400 <= r.status_code < 500, f"{row.method} {url[:80]}: {r.status_code}"
        spec = openapi[row.path][row.method.lower()]
        declared = [p["name"] for p in spec.get("parameters", []) if p["in"] == "query"]
        url = await url_for(w, row)
        for name in declared:
            for value in (0, -1, 10**9, 10**30, "garbage", "x" * 5000, "\u0000", "nan", "inf", "", "1e308"):
                params = {**(QUERIES[row.path](w) if row.path in QUERIES else {}), name: value}
                r = await client.request(
                    row.method, url, params=params, json=row.body(w) if row.body else None, headers=w.headers(caller)
                )
                assert_clean(r, f"{row.method} {row.path}?{name}={value!r:.30}")
                if value == "\u0000":
                    assert_error(r, 422)


async def test_documented_out_of_range_list_parameters_are_422(client):
    w = await build_world(client)
    lists = {
        "/v1/alerts": "regulator",
        "/v1/ledger/entries": "auditor",
        "/v1/complaints": "regulator",
        "/v1/consumers/me/cards": "consumer_a",
        "/v1/consumers/me/redemptions": "consumer_a",
        "/v1/merchants/me/cards": "merchant_a",
        "/v1/products": "none",
        "/v1/merchants": "none",
    }
    for path, caller in lists.items():
        for query in ({"limit": 0}, {"limit": 10**9}, {"limit": "ten"}):
            assert_error(await client.get(path, params=query, headers=w.headers(caller)), 422, "invalid_field")
    for query in ({"wait": -1}, {"wait": 61}, {"after": "garbage"}, {"after": -1}):
        assert_error(await client.get("/v1/alerts", params=query, headers=w.headers("regulator")), 422)
    for query in ({"after": "garbage"}, {"after": 10**30}):
        assert_error(await client.get("/v1/ledger/entries", params=query, headers=w.headers("auditor")), 422)
    assert_error(await client.get("/v1/merchants", params={"after": "garbage"}), 422)
    assert_error(
        await client.get("/v1/ledger/entries/1000000000000000000000000000000", headers=w.headers("auditor")), 422
    )
    assert_error(await client.get("/v1/ledger/consistency", params={"first": 10**30, "second": 10**30}), 422)


async def test_malformed_bodies_on_every_body_route_are_4xx(client):
    w = await build_world(client)
    for row in body_rows():
        url, headers = await url_for(w, row), w.headers(caller_for(row))
        context = f"{row.method} {row.path}"
        for raw in (
            b'{"a": ',
            b"{'single': 'quotes'}",
            b"\xff\xfe\x00",
            b"[" * 10_000 + b"]" * 10_000,
            b'{"n": ' + b"9" * 10_000 + b"}",
            b'{"a": 1}{"b": 2}',
        ):
            r = await client.request(row.method, url, content=raw, headers={**headers, **JSON})
            assert_error(r, 400)
        for raw in (b"[]", b"null", b"42", b'"text"', b'{"a": NaN}', b'{"a": -Infinity}'):
            r = await client.request(row.method, url, content=raw, headers={**headers, **JSON})
            assert_clean(r, context)
            assert r.status_code in (400, 422), context
        valid = row.body(w)
        for content_type, raw in (
            ("text/plain", b'{"a": 1}'),
            ("application/x-www-form-urlencoded", b"a=1&b=2"),
            ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--"),
            ("application/xml", b"<a/>"),
        ):
            r = await client.request(row.method, url, content=raw, headers={**headers, "Content-Type": content_type})
            assert_clean(r, f"{context} as {content_type}")
            assert 400 <= r.status_code < 500, f"{context} as {content_type}: {r.status_code}"
        if valid:  # a body the route needs: an empty one is 400 missing_body
            r = await client.request(row.method, url, content=b"", headers={**headers, **JSON})
            assert_error(r, 400, "missing_body")
            r = await client.request(row.method, url, headers=headers)
            assert_error(r, 400, "missing_body")
        r = await client.request(row.method, url, json={"x": "y" * 70_000}, headers=headers)
        assert_error(r, 413, "body_too_large")


async def test_oversize_bodies_are_413_with_or_without_a_content_length(client):
    gym = await create_merchant(client)

    async def chunks():
        yield b'{"name": "'
        for _ in range(200):
            yield b"\xe5\x90\x8d" * 500
        yield b'"}'

    for headers, content in (({}, b"{" + b" " * (64 * 1024 + 1) + b"}"), ({}, chunks())):
        r = await client.post("/v1/products", content=content, headers={**gym["headers"], **JSON, **headers})
        assert_error(r, 413, "body_too_large")
    r = await client.post("/v1/consumers", content=b"{}", headers={**JSON, "Content-Length": "999999999999999999999"})
    assert_error(r, 413, "body_too_large")
    r = await client.post("/v1/consumers", content=b"{}", headers={**JSON, "Content-Length": "lots"})
    assert_clean(r, "non-numeric Content-Length")
    assert (await client.get("/v1/products", params={"merchant_id": gym["id"]})).json()["items"] == []


async def test_money_fields_take_only_integer_fen(client):
    gym, li, product, card = await _shop_with_a_card(client)
    for value in (10**30, -(10**30), 0, -1, 1.5, 100.0, 1e4, "100", "1e4", True, None, [100], {"fen": 100}):
        body = {"type": "stored_value", "name": "x", "price": value, "face_value": 12_000, "valid_days": 9}
        assert_error(await client.post("/v1/products", json=body, headers=gym["headers"]), 422, "invalid_field")
        body = {"type": "stored_value", "name": "x", "price": 10_000, "face_value": value, "valid_days": 9}
        assert_error(await client.post("/v1/products", json=body, headers=gym["headers"]), 422)
        assert_error(
            await client.post(f"/v1/cards/{card['id']}/redemptions", json={"amount": value}, headers=gym["headers"]),
            422,
        )
        assert_error(
            await client.post(f"/v1/cards/{card['id']}/redemptions", json={"uses": value}, headers=gym["headers"]), 422
        )
    balance = (await client.get(f"/v1/cards/{card['id']}", headers=li["headers"])).json()["balance"]
    assert (balance["held"], balance["released"], balance["escrow"]) == (0, 0, 10_000)


async def test_a_bad_idempotency_key_is_a_clean_400(client):
    gym = await create_merchant(client)
    body = {"type": "count", "name": "10次卡", "price": 1000, "uses": 10, "valid_days": 9}
    for key in ("k" * 256, "ключ-ключ".encode(), "键".encode(), b"tab\tkey", b"nul\x00key", b"\xff\xfe", b""):
        r = await client.post("/v1/products", json=body, headers={**gym["headers"], "Idempotency-Key": key})
        assert_error(r, 400, "bad_idempotency_key")
    r = await client.post(
        "/v1/consumers",
        json={"name": "Li", "phone": "13912345678", "verification_id": "vrf_x", "code": "123456"},
        headers={"Idempotency-Key": "k" * 10_000},
    )
    assert_error(r, 400, "bad_idempotency_key")
    assert (await client.get("/v1/products", params={"merchant_id": gym["id"]})).json()["items"] == []


async def test_hostile_authorization_headers_are_401(client):
    for value in (
        b"Bearer",
        b"Bearer ",
        b"Basic dXNlcjpwYXNz",
        b"Bearer " + b"x" * 10_000,
        b"Bearer op_\x00",
        "Bearer 令牌".encode(),
        b"Bearer \xff\xfe",
        b"bearer  cs_" + b"0" * 43,
        b"Bearer a b c",
    ):
        r = await client.get("/v1/ping", headers={"Authorization": value})
        assert_error(r, 401)
