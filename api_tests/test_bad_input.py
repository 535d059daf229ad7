"""Bad input of every kind is a 4xx with the SPEC §5 error body, never a 500, and changes nothing."""

from api_tests.factories import (
    OP,
    assert_error,
    buy_card,
    create_merchant,
    get_card,
    publish,
    publish_count,
    publish_period,
    publish_stored_value,
    register_consumer,
    valid_uscc,
)

A_PRODUCT = {"type": "stored_value", "name": "储值卡", "price": 10_000, "face_value": 12_000, "valid_days": 365}


async def post_product(client, merchant, body):
    return await client.post("/v1/products", json=body, headers=merchant["headers"])


async def test_malformed_json_is_400(client):
    gym = await create_merchant(client)
    h = {**gym["headers"], "Content-Type": "application/json"}
    for raw in (
        b'{"type": "count",',
        b"{'type': 'count'}",
        b"\xff\xfe{}",
        b"[" * 5000 + b"]" * 5000,
        b'{"price": ' + b"1" * 5000 + b"}",
    ):
        assert_error(await client.post("/v1/products", content=raw, headers=h), 400, "malformed_json")


async def test_a_body_that_is_not_an_object_is_400(client):
    gym = await create_merchant(client)
    for raw in (b"[1, 2]", b"null", b'"a string"', b"42"):
        r = await client.post(
            "/v1/products", content=raw, headers={**gym["headers"], "Content-Type": "application/json"}
        )
        assert_error(r, 400, "malformed_body")


async def test_a_body_that_is_not_json_is_400(client):
    gym = await create_merchant(client)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml", None):
        headers = dict(gym["headers"])
        if content_type:
            headers["Content-Type"] = content_type
        raw = b"type=count&name=x" if content_type != "text/plain" else b'{"type": "count"}'
        assert_error(await client.post("/v1/products", content=raw, headers=headers), 400)


async def test_an_empty_body_is_400(client):
    gym = await create_merchant(client)
    assert_error(
        await client.post("/v1/products", content=b"", headers={**gym["headers"], "Content-Type": "application/json"}),
        400,
        "missing_body",
    )


async def test_a_missing_field_is_422_and_names_it(client):
    gym = await create_merchant(client)
    for field in ("type", "name", "price", "valid_days"):
        body = {k: v for k, v in A_PRODUCT.items() if k != field}
        error = assert_error(await post_product(client, gym, body), 422, "invalid_field")
        assert field in error["message"]


async def test_a_price_that_is_not_a_positive_integer_of_fen_is_422(client):
    gym = await create_merchant(client)
    for price in (
        0,
        -1,
        -(10**12),
        10**12 + 1,
        10**30,
        100.5,
        100.0,
        "10000",
        "1e4",
        True,
        None,
        [10_000],
        {"fen": 10_000},
    ):
        error = assert_error(await post_product(client, gym, {**A_PRODUCT, "price": price}), 422, "invalid_field")
        assert "price" in error["message"]
    assert (await client.get(f"/v1/products?merchant_id={gym['id']}")).json()["items"] == []


async def test_an_ask_for_a_bad_amount_is_422_and_holds_nothing(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=10_000, face_value=12_000))
    for amount in (0, -1, -120_000, 100.5, 100.0, "100", True, 10**13, 10**40):
        r = await client.post(f"/v1/cards/{card['id']}/redemptions", json={"amount": amount}, headers=gym["headers"])
        assert_error(r, 422)
    assert (await get_card(client, li, card))["balance"]["held"] == 0


async def test_an_ask_for_more_than_the_card_holds_is_insufficient_balance(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    card = await buy_card(client, li, await publish_stored_value(client, gym, price=10_000, face_value=12_000))
    r = await client.post(f"/v1/cards/{card['id']}/redemptions", json={"amount": 10**12}, headers=gym["headers"])
    assert_error(r, 409, "insufficient_balance")


async def test_unknown_fields_are_refused(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    assert_error(await post_product(client, gym, {**A_PRODUCT, "discount": 5}), 422, "invalid_field")
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    r = await client.post(
        "/v1/cards",
        json={"product_id": product["id"], "price": 1, "payment": {"method": "alipay", "reference": "a"}},
        headers=li["headers"],
    )
    assert_error(r, 422)
    r = await client.post(
        "/v1/cards",
        json={"product_id": product["id"], "payment": {"method": "alipay", "reference": "a", "amount": 1}},
        headers=li["headers"],
    )
    assert_error(r, 422)
    card = await buy_card(client, li, product)
    r = await client.post(
        f"/v1/cards/{card['id']}/redemptions", json={"amount": 1, "note": "x"}, headers=gym["headers"]
    )
    assert_error(r, 422)
    assert_error(await client.post(f"/v1/cards/{card['id']}/refund", json={"amount": 1}, headers=li["headers"]), 422)
    assert (await get_card(client, li, card))["balance"]["escrow"] == 10_000


async def test_a_malformed_uscc_is_422_with_a_clear_message(client):
    for uscc, hint in [
        ("91350100M000100Y4", "18 characters"),
        ("91350100M000100Y4X1", "18 characters"),
        ("91350100M0001OOY43", "letters other than I, O, S, V and Z"),
        ("9135A100M000100Y43", "6-digit division code"),
    ]:
        r = await client.post("/v1/merchants", json={"name": "x", "uscc": uscc, "category": "fitness"}, headers=OP)
        error = assert_error(r, 422, "invalid_uscc")
        assert hint in error["message"] and "uscc" in error["message"]
    r = await client.post("/v1/merchants", json={"name": "x", "uscc": "", "category": "fitness"}, headers=OP)
    assert_error(r, 422)


async def test_a_uscc_with_a_wrong_check_character_is_422_invalid_uscc(client):
    good = valid_uscc()
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    wrong = good[:17] + alphabet[(alphabet.index(good[17]) + 1) % 31]
    error = assert_error(
        await client.post("/v1/merchants", json={"name": "x", "uscc": wrong, "category": "gym"}, headers=OP),
        422,
        "invalid_uscc",
    )
    assert "check character" in error["message"]
    r = await client.post("/v1/merchants", json={"name": "x", "uscc": good.lower(), "category": "gym"}, headers=OP)
    assert r.status_code == 201 and r.json()["uscc"] == good
    assert_error(
        await client.post("/v1/merchants", json={"name": "y", "uscc": good, "category": "gym"}, headers=OP),
        409,
        "uscc_taken",
    )


async def test_the_price_cap_is_five_thousand_yuan(client):
    gym = await create_merchant(client)
    assert (await post_product(client, gym, {**A_PRODUCT, "price": 500_000, "face_value": 500_000})).status_code == 201
    assert_error(
        await post_product(client, gym, {**A_PRODUCT, "price": 500_001, "face_value": 600_000}), 422, "price_over_cap"
    )


async def test_product_fields_must_fit_the_card_type(client):
    gym = await create_merchant(client)
    cases = [
        ({**A_PRODUCT, "face_value": 9_999}, "face_value_below_price"),
        ({**A_PRODUCT, "face_value": None}, "missing_field"),
        ({**A_PRODUCT, "uses": 3}, "field_not_applicable"),
        ({**A_PRODUCT, "list_price": 2}, "invalid_list_price"),
        ({"type": "count", "name": "x", "price": 1000, "valid_days": 30}, "missing_field"),
        (
            {"type": "count", "name": "x", "price": 1000, "uses": 3, "bonus_uses": 3, "valid_days": 30},
            "invalid_bonus_uses",
        ),
        (
            {"type": "count", "name": "x", "price": 1000, "uses": 3, "face_value": 1000, "valid_days": 30},
            "field_not_applicable",
        ),
        ({"type": "period", "name": "x", "price": 1000, "periods": 3, "valid_days": 90}, "missing_field"),
        (
            {"type": "period", "name": "x", "price": 1000, "periods": 3, "period_days": 30, "valid_days": 89},
            "validity_too_short",
        ),
        ({"type": "gift", "name": "x", "price": 1000, "valid_days": 30}, "invalid_field"),
        ({**A_PRODUCT, "valid_days": 0}, "invalid_field"),
        ({"type": "count", "name": "x", "price": 1000, "uses": 0, "valid_days": 30}, "invalid_field"),
        ({"type": "count", "name": "x", "price": 1000, "uses": 2, "bonus_uses": -1, "valid_days": 30}, "invalid_field"),
    ]
    for body, code in cases:
        body = {k: v for k, v in body.items() if v is not None}
        assert_error(await post_product(client, gym, body), 422, code)
    assert (await client.get(f"/v1/products?merchant_id={gym['id']}")).json()["items"] == []


async def test_an_ask_gives_exactly_one_unit_field_of_the_cards_own_unit(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    stored = await buy_card(client, li, await publish_stored_value(client, gym, price=1000, face_value=1200))
    count = await buy_card(client, li, await publish_count(client, gym, price=1000, uses=3))
    period = await buy_card(client, li, await publish_period(client, gym, price=1000, periods=3, period_days=7))
    for card, body, code in [
        (stored, {"amount": 10, "uses": 1}, "invalid_redemption_units"),
        (stored, {}, "invalid_redemption_units"),
        (stored, {"amount": None}, "invalid_redemption_units"),
        (count, {"uses": 1, "periods": 1}, "invalid_redemption_units"),
        (stored, {"uses": 1}, "wrong_unit"),
        (count, {"amount": 100}, "wrong_unit"),
        (period, {"uses": 1}, "wrong_unit"),
        (count, {"periods": 1}, "wrong_unit"),
    ]:
        r = await client.post(f"/v1/cards/{card['id']}/redemptions", json=body, headers=gym["headers"])
        assert_error(r, 422, code)
    for card in (stored, count, period):
        assert (await get_card(client, li, card))["balance"]["units_held"] == 0


async def test_an_oversize_body_is_413(client):
    gym = await create_merchant(client)
    big = {**A_PRODUCT, "name": "x" * 70_000}
    assert_error(await post_product(client, gym, big), 413, "body_too_large")

    async def stream():  # no Content-Length: the limit is counted as the body arrives
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    r = await client.post(
        "/v1/products", content=stream(), headers={**gym["headers"], "Content-Type": "application/json"}
    )
    assert_error(r, 413, "body_too_large")
    assert (await client.get(f"/v1/products?merchant_id={gym['id']}")).json()["items"] == []


async def test_unicode_names_round_trip(client):
    gym = await create_merchant(client)
    for name in (
        "铁馆健身 Iron Gym",
        "Café ☕ 🏋️‍♀️",
        "مرحبا",
        "e\u0301\u0301",
        "\u200bzero width",
        "𠜎𠜱𠝹",
        "名" * 200,
        "tab\tand\nnewline",
    ):
        product = await publish(client, gym, name=name)
        assert product["name"] == name.strip()
        assert (await client.get(f"/v1/products/{product['id']}")).json()["name"] == name.strip()
        r = await client.post(
            "/v1/merchants", json={"name": name, "uscc": valid_uscc(), "category": "体育"}, headers=OP
        )
        assert r.status_code == 201 and r.json()["name"] == name.strip()


async def test_bad_names_are_422(client):
    gym = await create_merchant(client)
    for name in ("", "   ", "名" * 201, "nul\u0000inside", 42, None):
        assert_error(await post_product(client, gym, {**A_PRODUCT, "name": name}), 422)
        assert_error(
            await client.post("/v1/merchants", json={"name": name, "uscc": valid_uscc(), "category": "x"}, headers=OP),
            422,
        )
        assert_error(
            await client.post(
                "/v1/consumers",
                json={"name": name, "phone": "13912345678", "verification_id": "vrf_x", "code": "123456"},
            ),
            422,
        )
    assert (await client.get(f"/v1/products?merchant_id={gym['id']}")).json()["items"] == []


async def test_a_lone_surrogate_in_a_name_is_422(client):
    gym = await create_merchant(client)
    raw = b'{"type": "count", "name": "bad \\ud800 half", "price": 100, "uses": 1, "valid_days": 1}'
    r = await client.post("/v1/products", content=raw, headers={**gym["headers"], "Content-Type": "application/json"})
    assert_error(r, 422)


async def test_bad_payments_are_refused_and_nothing_is_sold(client):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    product = await publish_count(client, gym, price=1000, uses=3)
    for payment in (
        {"method": "cash", "reference": "r"},
        {"method": "alipay", "reference": ""},
        {"method": "alipay", "reference": "r" * 129},
        {"method": "alipay"},
        "alipay",
        {"method": "alipay", "reference": "a\u0000b"},
        {"method": "alipay", "reference": 12345},
    ):
        r = await client.post(
            "/v1/cards", json={"product_id": product["id"], "payment": payment}, headers=li["headers"]
        )
        assert_error(r, 422)
    assert_error(
        await client.post(
            "/v1/cards",
            json={"product_id": "prod_nope", "payment": {"method": "alipay", "reference": "r"}},
            headers=li["headers"],
        ),
        404,
        "product_not_found",
    )
    assert (await client.get("/v1/consumers/me/cards", headers=li["headers"])).json()["items"] == []


async def test_bad_closure_dates_and_reasons_are_422(client):
    gym = await create_merchant(client)
    for body in (
        {"effective_date": "2099-01-01T00:00:00", "reason": "x"},
        {"effective_date": "soon", "reason": "x"},
        {"effective_date": "2099-01-01T00:00:00Z"},
        {"effective_date": "2099-01-01T00:00:00Z", "reason": ""},
        {"effective_date": "2099-01-01T00:00:00Z", "reason": "a\u0000"},
    ):
        assert_error(await client.post("/v1/merchants/me/closure", json=body, headers=gym["headers"]), 422)
    assert (await client.get("/v1/merchants/me", headers=gym["headers"])).json()["status"] == "active"


async def test_bad_list_parameters_are_422(client):
    li = await register_consumer(client)
    for query in ("limit=0", "limit=201", "limit=ten", "after=" + "x" * 65, "status=lost"):
        assert_error(await client.get(f"/v1/consumers/me/redemptions?{query}", headers=li["headers"]), 422)


async def test_an_unknown_route_or_method_is_an_error_body(client):
    li = await register_consumer(client)
    assert_error(await client.get("/v1/nowhere", headers=li["headers"]), 404)
    assert_error(await client.delete("/v1/cards/card_x", headers=li["headers"]), 405, "method_not_allowed")
