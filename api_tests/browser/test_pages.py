"""The pages in a real Chromium, at a phone viewport (390×844) and a desk one: the consumer signs in with phone and
code, an ask appears live, Confirm releases it and Verify receipt checks it (and catches a tampered proof); the QR
deep link opens one ask and Reject voids it; the merchant counter asks and sees the answer arrive; the regulator
sees a red merchant's alert arrive, acknowledges and resolves it; the directory lists green before yellow.
Every visit is weighed (< 150 KB of HTML+CSS+JS), checked by axe-core, and no console error is allowed."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from api_tests.browser.conftest import README_SHOTS, _server, check_axe, code_for, register
from api_tests.factories import (
    answer,
    ask,
    buy_card,
    create_merchant,
    create_regulator,
    file_complaint,
    publish,
    publish_count,
    put_policy,
)

LIVE = 20_000  # ms a live update may take (long-poll or 1 s polling, a checkpoint every 0.5 s)


async def sign_in_consumer(visit, page, api: httpx.AsyncClient, phone: str) -> None:
    await page.fill("input[name=phone]", phone)
    await page.click("#send-code")
    await page.wait_for_selector("#signin-status.good", timeout=LIVE)
    await page.fill("input[name=code]", await code_for(api, phone))
    await page.click("#sign-in")


async def setup_card(api: httpx.AsyncClient, count: bool = False):
    merchant = await create_merchant(api, "Iron Gym 铁馆健身")
    product = await (publish_count(api, merchant, price=60_000, uses=10) if count else publish(api, merchant))
    consumer = await register(api)
    card = await buy_card(api, consumer, product)
    return merchant, consumer, card


async def test_consumer_signs_in_sees_an_ask_live_confirms_and_verifies_the_receipt(visit, api, viewport):
    merchant, consumer, card = await setup_card(api)
    page = await visit.new_page()
    await visit.goto(page, "/app")
    assert await page.locator("input[type=tel][name=phone][autocomplete=tel]").count() == 1
    assert await page.locator("input[name=code][autocomplete=one-time-code]").count() == 1
    await sign_in_consumer(visit, page, api, consumer["phone"])
    await page.wait_for_selector(f"#card-{card['id']}", timeout=LIVE)
    cookies = {c["name"]: c for c in await visit.context.cookies()}
    assert cookies["esc_app"]["httpOnly"] and cookies["esc_app"]["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie.indexOf('esc_app') === -1 && localStorage.length === 0")
    await visit.goto(page, "/app")  # the signed-in page's own first load, weighed and checked
    assert "¥1,000.00" in await page.locator(f"#card-{card['id']} .balance").inner_text()

    rdm = await ask(api, merchant, card, amount=5_000)  # made through the API: the page is not reloaded
    item = page.locator(f"#inbox .ask[data-id='{rdm['id']}']")
    await item.wait_for(timeout=LIVE)
    text = await item.inner_text()
    assert "Iron Gym" in text and "¥50.00" in text and "¥41.66" in text, text  # units (face) and release amount
    await page.wait_for_function(  # the hold shows on the card at once
        "id => document.querySelector('#card-' + id + ' .available').textContent === '¥958.34'",
        arg=card["id"],
        timeout=LIVE,
    )
    await check_axe(page, "/app with an ask")
    if viewport == "phone":
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(README_SHOTS / "consumer-inbox.png"))

    await item.get_by_role("button", name="确认").click()
    await item.locator(".status.good").wait_for(timeout=LIVE)
    r = await api.get(f"/v1/redemptions/{rdm['id']}", headers=consumer["headers"])
    assert r.json()["status"] == "confirmed", r.text
    seq = r.json()["ledger_seq"]
    card_now = (await api.get(f"/v1/cards/{card['id']}", headers=consumer["headers"])).json()
    assert card_now["balance"]["released"] == 4_166
    await page.wait_for_function(  # the card on the page follows, without a reload
        "id => document.querySelector('#card-' + id + ' .balance').textContent === '¥958.34'",
        arg=card["id"],
        timeout=LIVE,
    )

    receipt = page.locator(f"#receipts .receipt[data-seq='{seq}']")
    await receipt.get_by_role("button", name="验证凭证").click()
    verdict = receipt.locator(".verdict")
    await page.wait_for_function(
        "el => el.classList.contains('good') || el.classList.contains('bad')",
        arg=await verdict.element_handle(),
        timeout=LIVE,
    )
    assert (await verdict.inner_text()).startswith("已验证"), await verdict.inner_text()

    async def tamper(route):
        response = await route.fetch()
        body = await response.json()
        first = bytearray(base64.b64decode(body["proof"][0]))
        first[0] ^= 1
        body["proof"][0] = base64.b64encode(bytes(first)).decode()
        await route.fulfill(response=response, body=json.dumps(body))

    await page.route("**/proof?*", tamper)
    await receipt.get_by_role("button", name="验证凭证").click()
    await page.wait_for_function("el => el.classList.contains('bad')", arg=await verdict.element_handle(), timeout=LIVE)
    assert "验证失败" in await verdict.inner_text()
    assert not visit.errors, visit.errors


async def test_the_qr_deep_link_opens_one_ask_a_stranger_sees_a_sign_in_and_reject_voids_it(visit, api, server):
    merchant, consumer, card = await setup_card(api)
    rdm = await ask(api, merchant, card, amount=2_000)
    page = await visit.new_page()
    await visit.goto(page, f"/app/r/{rdm['id']}")
    assert await page.locator("#signin").count() == 1 and await page.locator(".ask").count() == 0
    assert "Iron Gym" not in await page.content()
    # Another consumer's session: not found, and nothing of the ask.
    other = await register(api, "Han Meimei 韩梅梅")
    async with httpx.AsyncClient(base_url=str(api.base_url), cookies={"esc_app": other["token"]}) as theirs:
        r = await theirs.get(f"/app/r/{rdm['id']}")
    assert r.status_code == 404 and rdm["id"] not in r.text.replace(f"/app/r/{rdm['id']}", "")
    assert "Iron Gym" not in r.text

    await sign_in_consumer(visit, page, api, consumer["phone"])
    item = page.locator(f".ask[data-id='{rdm['id']}']")
    await item.wait_for(timeout=LIVE)
    assert "/app/r/" in page.url
    await check_axe(page, "/app/r/{id} signed in")
    await item.get_by_role("button", name="拒绝").click()
    await page.wait_for_function(
        "el => el.textContent.includes('已拒绝')", arg=await item.element_handle(), timeout=LIVE
    )
    r = await api.get(f"/v1/redemptions/{rdm['id']}", headers=consumer["headers"])
    assert r.json()["status"] == "rejected", r.text
    card_now = (await api.get(f"/v1/cards/{card['id']}", headers=consumer["headers"])).json()
    assert card_now["balance"]["held"] == 0 and card_now["balance"]["released"] == 0
    assert not visit.errors, visit.errors


async def test_the_merchant_counter_asks_and_sees_the_confirmation_arrive(visit, api):
    merchant, consumer, card = await setup_card(api, count=True)
    page = await visit.new_page()
    await visit.goto(page, "/merchant")
    await page.fill("input[type=password][name=api_key]", merchant["api_key"])
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_selector("#find", timeout=LIVE)
    await visit.goto(page, "/merchant")
    await page.fill("#card_id", card["id"])
    await page.get_by_role("button", name="查找卡").click()
    await page.wait_for_selector("#card-view:not([hidden])", timeout=LIVE)
    assert "10" in await page.inner_text("#cv-units")
    await page.fill("#units", "2")
    await page.get_by_role("button", name="发起核销").click()
    await page.wait_for_selector("#ask-view:not([hidden])", timeout=LIVE)
    href = await page.get_attribute("#ask-link", "href")
    assert href.startswith("/app/r/rdm_"), href
    await page.wait_for_function("() => document.getElementById('ask-qr').naturalWidth > 0", timeout=LIVE)
    async with httpx.AsyncClient(base_url=str(api.base_url), cookies={"esc_merchant": merchant["api_key"]}) as own:
        qr = await own.get(f"/merchant/qr/{href.rsplit('/', 1)[1]}.svg")
    assert qr.status_code == 200 and qr.text.startswith("<svg"), qr.text[:100]
    stranger = await api.get(f"/merchant/qr/{href.rsplit('/', 1)[1]}.svg")
    assert stranger.status_code == 404
    await check_axe(page, "/merchant with an ask")

    await answer(api, consumer, {"id": href.rsplit("/", 1)[1]}, "confirm")
    await page.wait_for_selector("#ask-status.good", timeout=LIVE)
    assert "已确认" in await page.inner_text("#ask-status")
    card_now = (await api.get(f"/v1/cards/{card['id']}", headers=consumer["headers"])).json()
    assert card_now["balance"]["units_used"] == 2 and card_now["balance"]["released"] == 12_000
    assert not visit.errors, visit.errors


@pytest.fixture(scope="module")
async def policy_server():
    """A server of its own whose policy turns a merchant yellow at one complaint and red at two."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="escrow-pages-policy-") as tmp:
        s = await _server(tmp, "policy")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.port}", timeout=30) as c:
                await put_policy(c, {"complaints": {"yellow": 1, "red": 2}})
            yield s
        finally:
            s.stop()
            await s.db.drop()


async def complain(api, merchant, product, consumers: int) -> None:
    for i in range(consumers):
        c = await register(api, f"Consumer {i} 顾客")
        await buy_card(api, c, product)
        await file_complaint(api, c, merchant)


async def test_the_regulator_sees_a_red_merchant_alert_arrive_live_acknowledges_and_resolves_it(
    visit, policy_server, viewport
):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{policy_server.port}", timeout=30) as api:
        regulator = await create_regulator(api)
        visit.base = f"http://127.0.0.1:{policy_server.port}"
        page = await visit.new_page()
        await visit.goto(page, "/regulator")
        await page.fill("input[type=password][name=api_key]", regulator["api_key"])
        await page.get_by_role("button", name="登录").click()
        await page.wait_for_selector("#alerts", state="attached", timeout=LIVE)
        await visit.goto(page, "/regulator")

        merchant = await create_merchant(api, "Runaway Spa 跑路水疗")
        product = await publish(api, merchant)
        await complain(api, merchant, product, 2)  # yellow, then red
        red = page.locator(f"#alerts .alert[data-merchant='{merchant['id']}'][data-to='red']")
        await red.wait_for(timeout=LIVE)
        await check_axe(page, "/regulator with alerts")
        if viewport == "desk":
            README_SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(README_SHOTS / "regulator-desk.png"), full_page=True)
        alert_id = await red.get_attribute("data-id")
        await red.get_by_role("button", name="确认收到").click()
        await page.wait_for_selector(f".alert[data-id='{alert_id}'][data-status='acknowledged']", timeout=LIVE)
        await red.locator("input[name=finding]").fill("线下核实：已停业 closed on site visit")
        await red.get_by_role("button", name="办结").click()
        await page.wait_for_selector(f".alert[data-id='{alert_id}'][data-status='resolved']", timeout=LIVE)
        alerts = (await api.get("/v1/alerts?limit=500", headers=regulator["headers"])).json()["items"]
        mine = next(a for a in alerts if a["id"] == alert_id)
        assert mine["status"] == "resolved" and mine["to_code"] == "red" and "线下核实" in mine["finding"]

        await visit.goto(page, "/regulator?code=red")  # the table as it is now, filtered by code
        assert await page.locator("#merchants tbody tr[data-code]:not([data-code='red'])").count() == 0
        await page.click(f"#merchants a[href='/regulator/merchants/{merchant['id']}']")
        await page.wait_for_selector("text=Runaway Spa", timeout=LIVE)
        await check_axe(page, "/regulator/merchants/{id}")
        assert await page.locator(".code-red").count() >= 1
        assert not visit.errors, visit.errors


async def test_the_desk_names_a_defaulted_merchant_the_directory_no_longer_lists(visit, api):
    merchant = await create_merchant(api, "Vanished Salon 消失美发")
    regulator = await create_regulator(api)
    r = await api.post(
        f"/v1/merchants/{merchant['id']}/default", json={"reason": "Ran away."}, headers=regulator["headers"]
    )
    assert r.status_code == 200, r.text
    listed = (await api.get("/v1/merchants?limit=200")).json()["items"]
    assert merchant["id"] not in {m["id"] for m in listed}  # gone from the public directory
    page = await visit.new_page()
    await visit.goto(page, "/regulator")
    await page.fill("input[type=password][name=api_key]", regulator["api_key"])
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_selector("#alerts", state="attached", timeout=LIVE)
    alert = page.locator(f"#alerts .alert[data-merchant='{merchant['id']}']").first
    await alert.wait_for(timeout=LIVE)
    link = alert.locator(f"a[href='/regulator/merchants/{merchant['id']}']")
    assert await link.inner_text() == "Vanished Salon 消失美发"
    await link.click()
    await page.wait_for_selector("h1:has-text('Vanished Salon')", timeout=LIVE)
    assert merchant["id"] not in await page.title()
    assert not visit.errors, visit.errors


async def test_the_directory_lists_green_before_yellow_and_shows_a_merchant_and_the_checkpoint(visit, policy_server):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{policy_server.port}", timeout=30) as api:
        visit.base = f"http://127.0.0.1:{policy_server.port}"
        yellow = await create_merchant(api, "Yellow Yoga 黄瑜伽")
        await complain(api, yellow, await publish(api, yellow), 1)
        green = await create_merchant(api, "Green Gym 绿健身")
        await publish(api, green)
        page = await visit.new_page()
        await visit.goto(page, "/directory")
        codes = await page.eval_on_selector_all("#directory .merchant", "els => els.map(e => e.dataset.code)")
        rank = {"green": 0, "yellow": 1, "red": 2}
        assert codes == sorted(codes, key=rank.get) and "green" in codes and "yellow" in codes, codes
        names = await page.inner_text("#directory")
        assert names.index("Green Gym") < names.index("Yellow Yoga")
        await page.click(f"a[href='/directory/{green['id']}']")
        await page.wait_for_selector("text=Green Gym", timeout=LIVE)
        await check_axe(page, "/directory/{id}")
        assert "充1000送200" in await page.content()
        await visit.goto(page, "/?lang=en")
        assert "Latest signed checkpoint" in await page.content()
        assert await page.locator("#cp-size").count() == 1
        await visit.goto(page, "/directory")  # the language is remembered
        assert "Merchant directory" in await page.content()
        assert not visit.errors, visit.errors
