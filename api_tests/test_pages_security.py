"""The pages' rules that need no browser: security headers, session cookies, CSRF on every change, one party's
data never on another's page, money as yuan from integer fen, the two catalogs, and the read-only refund quote."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from api_tests.factories import (
    answer,
    ask,
    buy_card,
    create_merchant,
    create_regulator,
    publish,
    publish_count,
    refund,
    register_consumer,
)
from service.pages.web import yuan

PAGES = Path(__file__).resolve().parent.parent / "service" / "pages"


def csrf_of(html: str) -> str:
    return re.search(r'<meta name="csrf" content="([0-9a-f]+)">', html).group(1)


def with_cookies(client: httpx.AsyncClient, **cookies) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url), cookies=cookies)


async def test_every_page_sends_a_strict_csp_and_refuses_framing(client):
    for path in ("/", "/directory", "/app", "/merchant", "/regulator", "/static/site.css"):
        r = await client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    html = (await client.get("/app")).text
    assert "<script>" not in html and " style=" not in html and " on" + "click=" not in html


async def test_a_merchant_signs_in_with_its_key_for_an_httponly_strict_cookie_and_a_consumer_token_is_refused(client):
    merchant = await create_merchant(client)
    consumer = await register_consumer(client)
    page = await client.get("/merchant")
    token = csrf_of(page.text)
    r = await client.post("/merchant/session", data={"csrf": token, "api_key": consumer["token"]})
    assert r.status_code == 401 and "esc_merchant" not in r.headers.get("set-cookie", "")
    r = await client.post("/merchant/session", data={"csrf": "0" * 64, "api_key": merchant["api_key"]})
    assert r.status_code == 403  # a forged form: no session
    r = await client.post("/merchant/session", data={"csrf": token, "api_key": merchant["api_key"]})
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert "esc_merchant=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # test: plain http on loopback; production sets Secure


async def test_the_api_proxy_needs_the_csrf_token_for_changes_and_the_same_origin(client):
    merchant = await create_merchant(client)
    consumer = await register_consumer(client)
    card = await buy_card(client, consumer, await publish(client, merchant))
    rdm = await ask(client, merchant, card, amount=100)
    async with with_cookies(client, esc_app=consumer["token"]) as browser:
        token = csrf_of((await browser.get("/app")).text)
        path = f"/app/api/v1/redemptions/{rdm['id']}/confirm"
        assert (await browser.post(path)).json()["error"]["code"] == "csrf_failed"
        assert (await browser.post(path, headers={"X-CSRF-Token": "f" * 64})).status_code == 403
        r = await browser.post(path, headers={"X-CSRF-Token": token, "Origin": "https://evil.example"})
        assert r.status_code == 403
        r = await browser.get(f"/app/api/v1/redemptions/{rdm['id']}")  # reads need no token
        assert r.status_code == 200 and r.json()["status"] == "pending"
        r = await browser.post(path, headers={"X-CSRF-Token": token, "Origin": "http://escrow.test"})
        assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
        # A token made for one session is worthless for another.
        other = await register_consumer(client, "Han Meimei 韩梅梅")
        card2 = await buy_card(client, other, await publish(client, merchant))
        rdm2 = await ask(client, merchant, card2, amount=100)
    async with with_cookies(client, esc_app=other["token"]) as theirs:
        r = await theirs.post(f"/app/api/v1/redemptions/{rdm2['id']}/reject", headers={"X-CSRF-Token": token})
        assert r.status_code == 403
        r = await theirs.get(f"/app/api/v1/redemptions/{rdm['id']}")
        assert r.status_code == 404  # another consumer's ask, through the proxy too


async def test_the_pages_json_errors_are_the_apis_one_error_body_with_the_pages_headers(client):
    answers = [
        await client.get("/static/no-such-file.js"),
        await client.get("/nowhere/api/v1/cards"),
        await client.post("/app/api/v1/cards", json={}),  # no CSRF token
        await client.get("/app/cards/crd_none/qr.svg"),
    ]
    assert [r.status_code for r in answers] == [404, 404, 403, 404]
    for r in answers:
        assert r.headers["content-type"] == "application/json" and r.headers["x-frame-options"] == "DENY"
        body = r.json()
        assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message"], body
        assert body["error"]["code"] and body["error"]["message"]


async def test_forms_that_change_anything_refuse_a_missing_csrf_token(client):
    merchant = await create_merchant(client)
    consumer = await register_consumer(client)
    card = await buy_card(client, consumer, await publish(client, merchant))
    regulator = await create_regulator(client)
    async with with_cookies(client, esc_app=consumer["token"]) as browser:
        for path, data in (
            (f"/app/cards/{card['id']}/refund", {}),
            ("/app/complaints", {"merchant_id": merchant["id"], "category": "other", "text": "x"}),
            ("/app/signout", {}),
        ):
            assert (await browser.post(path, data=data)).status_code == 403, path
    async with with_cookies(client, esc_regulator=regulator["api_key"]) as desk:
        for path in (f"/regulator/merchants/{merchant['id']}/default", "/regulator/draws"):
            r = await desk.post(path, data={"reason": "gone", "confirm": "yes", "inspectors": "A"})
            assert r.status_code == 403, path
        token = csrf_of((await desk.get("/regulator")).text)
        r = await desk.post(f"/regulator/merchants/{merchant['id']}/default", data={"csrf": token, "reason": "gone"})
        assert r.status_code == 422  # no confirmation ticked: nothing done
        assert (await client.get(f"/v1/cards/{card['id']}", headers=consumer["headers"])).json()["status"] == "active"
        r = await desk.post("/regulator/draws", data={"csrf": token, "inspectors": "Wang, Zhao", "seed": "s-1"})
        assert r.status_code == 200 and 'id="draw-seed">s-1<' in r.text


async def test_the_refund_page_shows_the_amount_and_rule_before_and_refunds_exactly_that(client):
    merchant = await create_merchant(client)
    consumer = await register_consumer(client)
    card = await buy_card(client, consumer, await publish_count(client, merchant, price=10_001, uses=10))
    quote = (await client.get(f"/v1/cards/{card['id']}/refund-quote", headers=consumer["headers"])).json()
    assert quote["rule"] == "cooling_off" and quote["amount"] == 10_001 and quote["merchant_share"] == 0
    await answer(client, consumer, await ask(client, merchant, card, uses=3), "confirm")
    quote = (await client.get(f"/v1/cards/{card['id']}/refund-quote", headers=consumer["headers"])).json()
    assert quote["rule"] == "consumer_quit" and quote["refundable"] is True
    async with with_cookies(client, esc_app=consumer["token"]) as browser:
        page = await browser.get(f"/app/cards/{card['id']}/refund?lang=en")
        assert yuan(quote["amount"]) in page.text and "You quit" in page.text
    r = await client.get(f"/v1/cards/{card['id']}/refund-quote", headers=merchant["headers"])
    assert r.status_code == 403
    other = await register_consumer(client, "Han Meimei 韩梅梅")
    assert (await client.get(f"/v1/cards/{card['id']}/refund-quote", headers=other["headers"])).status_code == 404
    done = await refund(client, consumer, card)
    assert (done["amount"], done["rule"], done["merchant_share"]) == (
        quote["amount"],
        quote["rule"],
        quote["merchant_share"],
    )
    after = (await client.get(f"/v1/cards/{card['id']}/refund-quote", headers=consumer["headers"])).json()
    assert after["refundable"] is False


def test_money_is_shown_as_yuan_from_integer_fen():
    assert yuan(100_000) == "¥1,000.00"
    assert yuan(5) == "¥0.05"
    assert yuan(0) == "¥0.00"
    assert yuan(-150) == "-¥1.50"
    assert yuan(123_456_789_012_345_678) == "¥1,234,567,890,123,456.78"  # exact beyond a float's 2**53


def test_both_catalogs_hold_every_string_the_pages_use():
    zh = json.loads((PAGES / "i18n" / "zh.json").read_text(encoding="utf-8"))
    en = json.loads((PAGES / "i18n" / "en.json").read_text(encoding="utf-8"))
    assert set(zh) == set(en)
    used = set()
    for f in list((PAGES / "templates").glob("*.html")) + list((PAGES / "static").glob("*.js")):
        text = f.read_text(encoding="utf-8")
        used |= set(re.findall(r"\bt\.([a-z][a-z_]+)\b", text)) | set(re.findall(r'Esc\.t\("([a-z_]+)"\)', text))
    assert used - set(zh) == set(), used - set(zh)


async def test_odd_page_requests_get_a_clear_answer_never_a_500(client):
    merchant = await create_merchant(client)
    consumer = await register_consumer(client)
    odd = [
        "/directory/" + "x" * 300,
        "/directory/%E2%80%AE",
        "/app/r/'%22%3Cscript%3E",
        "/app/cards/nope/refund",
        "/app/cards/nope/qr.svg",
        "/merchant/qr/nope.svg",
        "/static/..%2Fweb.py",
        "/static/nope.js",
        "/nobody/api/v1/ping",
        "/regulator/merchants/nope",
        "/directory?code=purple",
        "/regulator?sort=%00",
    ]
    async with with_cookies(
        client, esc_app=consumer["token"], esc_merchant=merchant["api_key"], esc_regulator="rg_" + "0" * 40
    ) as browser:
        for path in odd:
            r = await browser.get(path)
            assert r.status_code < 500, (path, r.status_code, r.text[:200])
        token = csrf_of((await browser.get("/app")).text)
        for body in (b"not json", b"[]", b'{"phone": 1}', '{"phone": "\u0000"}'.encode()):
            r = await browser.post(
                "/app/session", content=body, headers={"X-CSRF-Token": token, "Content-Type": "application/json"}
            )
            assert 400 <= r.status_code < 500, (body, r.status_code, r.text[:200])
        r = await browser.post(
            "/app/complaints",
            content=b"csrf=" + token.encode() + b"&text=%FF%FE&merchant_id=",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert 400 <= r.status_code < 500, r.text[:200]
