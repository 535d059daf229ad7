"""`escrow demo`: the whole story of the service, played over HTTP against a running instance.

Run it against an empty database (`escrow serve`, then `escrow demo --url http://127.0.0.1:8000
--operator-token op_...`). Each step prints what happens and why, for someone new to the project:

1. The operator onboards a gym and a salon, a regulator and an auditor (the custodian bank).
2. The merchants publish prepaid cards; consumers buy them (100% of the money goes into escrow).
3. The gym asks for redemptions (核销); consumers confirm them (money moves to the gym) or reject one.
4. The salon sells hard — sixty cards to twenty clients — and draws complaints from its clients, each
   counted once (SPEC §3): the complaint rate is judged once five clients complain (833 bp, over the
   yellow line of 300 bp), the sixth makes 1,000 bp, red. Red publishes a warning.
5. The regulator's alert feed shows green → yellow → red; the regulator acknowledges.
6. The regulator declares the salon defaulted: every salon card is refunded at once by its purchase route.
7. The auditor fetches a signed checkpoint and the escrow reconciliation: paid in = escrow + released +
   refunded, and the ledger's sums equal the card balances.

Every amount is in fen (分). `run_demo` takes any `httpx.AsyncClient` (a real URL or the ASGI app).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx

from service.core.uscc import ALPHABET, check_character


class DemoError(RuntimeError):
    """A step got an answer the story did not expect."""


def _uscc() -> str:
    body = (
        "91"
        + "".join(secrets.choice("0123456789") for _ in range(6))
        + "".join(secrets.choice(ALPHABET) for _ in range(9))
    )
    return body + check_character(body)


def _yuan(fen: int) -> str:
    return f"¥{fen // 100:,}.{fen % 100:02d}"


async def run_demo(
    client: httpx.AsyncClient,
    operator_token: str,
    say: Callable[[str], Any] = print,
    read_code: Callable[[str], Any] | None = None,
) -> dict:
    """Play the story; returns the final state (health codes, alerts, refunds, reconciliation).

    `read_code(phone)` gives the last SMS code sent to a phone; by default the test outbox
    (`GET /v1/test/sms`, a service running with ESCROW_ENV=test)."""
    op = {"Authorization": f"Bearer {operator_token}"}
    step = 0

    def section(title: str) -> None:
        nonlocal step
        step += 1
        say(f"\n== {step}. {title}")

    async def call(method: str, path: str, expect: int, headers: dict | None = None, **kw) -> Any:
        r = await client.request(method, path, headers=headers, **kw)
        if r.status_code != expect:
            raise DemoError(f"{method} {path} answered {r.status_code}, expected {expect}: {r.text}")
        return r.json()

    def bearer(token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}

    async def publish(headers: dict, **product) -> Any:
        """A merchant publishes a card product, valid a year."""
        return await call("POST", "/v1/products", 201, headers, json={**product, "valid_days": 365})

    section("The operator (the consumer association) onboards two merchants, a regulator and an auditor")
    gym = await call(
        "POST", "/v1/merchants", 201, op, json={"name": "Iron Gym 铁馆健身", "uscc": _uscc(), "category": "fitness"}
    )
    salon = await call(
        "POST", "/v1/merchants", 201, op, json={"name": "Jade Salon 玉美发", "uscc": _uscc(), "category": "beauty"}
    )
    regulator = await call("POST", "/v1/regulators", 201, op, json={"name": "Weihai AMR 市场监管局"})
    auditor = await call("POST", "/v1/auditors", 201, op, json={"name": "Custodian Bank 托管银行"})
    gym_h, salon_h = bearer(gym["api_key"]), bearer(salon["api_key"])
    reg_h, aud_h = bearer(regulator["api_key"]), bearer(auditor["api_key"])
    say(
        f"   gym {gym['id']} and salon {salon['id']} (each checked by its unified social credit code), "
        f"regulator {regulator['id']}, auditor {auditor['id']}"
    )

    section("The merchants publish prepaid cards (发行预付卡)")
    gym_card = await publish(gym_h, type="count", name="10 sessions 10次卡", price=60_000, uses=10)
    salon_card = await publish(salon_h, type="stored_value", name="充300送100", price=30_000, face_value=40_000)
    say(
        f"   gym: {gym_card['uses']} sessions for {_yuan(gym_card['price'])}; "
        f"salon: {_yuan(salon_card['face_value'])} of service for {_yuan(salon_card['price'])}"
    )

    async def outbox_code(phone: str) -> str | None:
        r = await client.get("/v1/test/sms", params={"phone": phone}, headers=op)
        if r.status_code == 404:
            return None
        items = r.json()["items"] if r.status_code == 200 else []
        return items[-1]["code"] if items else None

    async def consumer(name: str) -> dict:
        # the phone is proved first (实名手机号): a code by SMS, then registration with it
        phone = "139" + "".join(secrets.choice("0123456789") for _ in range(8))
        started = await call("POST", "/v1/consumers/verifications", 202, json={"phone": phone})
        code = await outbox_code(phone)
        if code is None and read_code is not None:
            code = await read_code(phone)
        if code is None:
            raise DemoError(
                "no SMS code to read: run the service with ESCROW_ENV=test, or run the demo where "
                "it can read the development outbox (the same ESCROW_* settings)"
            )
        c = await call(
            "POST",
            "/v1/consumers",
            201,
            json={"name": name, "phone": phone, "code": code, "verification_id": started["verification_id"]},
        )
        c["headers"] = bearer(c["token"])
        return c

    async def buy(who: dict, product: dict) -> dict:
        return await call(
            "POST",
            "/v1/cards",
            201,
            who["headers"],
            json={
                "product_id": product["id"],
                "payment": {"method": "wechat_pay", "reference": f"wx-{secrets.token_hex(6)}"},
            },
        )

    section("Consumers buy gym cards: the whole price goes into escrow, nothing to the gym yet")
    li, han = await consumer("Li Lei 李雷"), await consumer("Han Meimei 韩梅梅")
    li_card, han_card = await buy(li, gym_card), await buy(han, gym_card)
    say(
        f"   {li['id']} and {han['id']} each paid {_yuan(gym_card['price'])}; card {li_card['id']} escrow "
        f"{_yuan(li_card['balance']['escrow'])}"
    )

    section("Redemptions (核销): the gym asks, the consumer confirms — or rejects a session that did not happen")
    for who, card in ((li, li_card), (li, li_card), (han, han_card)):
        rdm = await call("POST", f"/v1/cards/{card['id']}/redemptions", 201, gym_h, json={"uses": 1})
        done = await call("POST", f"/v1/redemptions/{rdm['id']}/confirm", 200, who["headers"])
        say(
            f"   {who['name']} confirmed 1 session: {_yuan(done['release_amount'])} released to the gym "
            f"(ledger entry #{done['ledger_seq']}, the consumer's receipt)"
        )
    rdm = await call("POST", f"/v1/cards/{han_card['id']}/redemptions", 201, gym_h, json={"uses": 3})
    rejected = await call("POST", f"/v1/redemptions/{rdm['id']}/reject", 200, han["headers"])
    say(f"   {han['name']} rejected an ask for 3 sessions ({rejected['status']}): the hold is voided, nothing moves")
    gym_health = await call("GET", f"/v1/merchants/{gym['id']}/health", 200)
    say(
        f"   the gym's health code: {gym_health['code']}"
        + (" (a new merchant: its rates are judged once it has sold 10 cards)" if gym_health["new_merchant"] else "")
    )

    section("The salon sells hard: sixty cards in a day, to twenty clients")
    salon_buyers = [await consumer(f"Salon client {i + 1}") for i in range(20)]
    salon_cards = [await buy(c, salon_card) for c in salon_buyers for _ in range(3)]
    salon_owner = [c for c in salon_buyers for _ in range(3)]
    h = await call("GET", f"/v1/merchants/{salon['id']}/health", 200)
    say(f"   {len(salon_cards)} cards, {_yuan(h['indicators']['window_issued'])} in escrow; code {h['code']}")

    section("Complaints (投诉) pile up, and the salon's code follows each one")
    say(
        "   a complaint counts once per client who holds a card, so no single client (nor a competitor) "
        "moves the code alone"
    )
    texts = [
        "The stylist has left and nobody answers the phone.",
        "Shop closed for 'renovation' right after I paid.",
        "Nobody at the shop for a week.",
        "Phone disconnected.",
        "The sign is gone.",
        "Landlord says they left.",
    ]
    each = []
    for who, text in zip(salon_buyers, texts):
        c = await call(
            "POST",
            "/v1/complaints",
            201,
            who["headers"],
            json={"merchant_id": salon["id"], "category": "closure_or_runaway", "text": text},
        )
        h = await call("GET", f"/v1/merchants/{salon['id']}/health", 200)
        each.append(h["code"])
        reasons = ", ".join(f"{r['indicator']} {r['value']} ≥ {r['threshold']} ({r['level']})" for r in h["reasons"])
        say(f"   complaint {c['id']} filed → code {h['code']}" + (f": {reasons}" if reasons else ""))
    if each != ["green"] * 4 + ["yellow", "red"]:
        raise DemoError(f"the salon should have turned yellow at the fifth complaint and red at the sixth, got {each}")
    codes = [code for i, code in enumerate(each) if code != (["green"] + each)[i]]  # the changes of code
    say(
        f"   red publishes a warning at once (公示预警): published at {h['warning']['published_at']}; "
        f"after the grace period the salon would be delisted automatically"
    )

    section("The regulator polls the alert feed (long-poll with a cursor) and acknowledges")
    feed = await call("GET", "/v1/alerts", 200, reg_h, params={"limit": 100})
    alerts = [a for a in feed["items"] if a["merchant_id"] == salon["id"]]
    for a in alerts:
        say(f"   alert {a['id']}: {a['kind']} {a['from_code']} → {a['to_code']} (ledger #{a['ledger_seq']})")
    for a in alerts:
        await call("POST", f"/v1/alerts/{a['id']}/acknowledge", 200, reg_h)
    say(f"   next poll starts after cursor {feed['next_cursor']}")

    section("The salon is gone: the regulator declares it defaulted, and every consumer is refunded at once")
    default = await call(
        "POST",
        f"/v1/merchants/{salon['id']}/default",
        200,
        reg_h,
        json={"reason": "Shop found closed during the offline check (线下核实)."},
    )
    say(f"   {default['cards_refunded']} cards refunded by their purchase route (ledger #{default['ledger_seq']})")
    refunded = 0
    for who, card in zip(salon_owner, salon_cards):
        after = await call("GET", f"/v1/cards/{card['id']}", 200, who["headers"])
        if after["status"] != "refunded" or after["balance"]["escrow"] != 0:
            raise DemoError(f"card {card['id']} was not refunded: {after}")
        refunded += after["balance"]["refunded"]
    say(f"   every salon client got their money back: {_yuan(refunded)} in all")
    for a in alerts:
        await call(
            "POST",
            f"/v1/alerts/{a['id']}/resolve",
            200,
            reg_h,
            json={"finding": "Confirmed closed; merchant declared defaulted and all cards refunded."},
        )

    section("The auditor (the custodian bank) checks the books")
    await call("POST", "/v1/ledger/checkpoints", 201, aud_h)  # a checkpoint of the ledger as it is now
    checkpoint = await call("GET", "/v1/ledger/checkpoint", 200)
    key = await call("GET", "/v1/ledger/public-key", 200)
    import base64

    from ledger.checkpoint import verify_checkpoint_json

    verify_checkpoint_json(checkpoint, base64.b64decode(key["public_key"]))  # raises if the signature is bad
    say(
        f"   signed checkpoint: {checkpoint['tree_size']} entries, root {checkpoint['root_hash']}; "
        f"Ed25519 signature checked against key {key['key_id']}"
    )
    recon = await call("GET", "/v1/escrow/reconciliation", 200, aud_h)
    say(
        f"   paid in {_yuan(recon['paid_in'])} = escrow {_yuan(recon['escrow'])} + released {_yuan(recon['released'])}"
        f" + refunded {_yuan(recon['refunded'])}; ledger agrees with card balances: {recon['consistent']}"
    )
    if not recon["consistent"] or recon["paid_in"] != recon["escrow"] + recon["released"] + recon["refunded"]:
        raise DemoError(f"the reconciliation is not consistent: {recon}")

    say("\nDone: every step above is an entry in the shared, tamper-evident ledger.")
    return {
        "gym": gym["id"],
        "salon": salon["id"],
        "salon_codes": codes,
        "salon_alerts": [(a["kind"], a["from_code"], a["to_code"]) for a in alerts],
        "cards_refunded": default["cards_refunded"],
        "refunded": refunded,
        "gym_code": (await call("GET", f"/v1/merchants/{gym['id']}/health", 200))["code"],
        "reconciliation": recon,
        "checkpoint": checkpoint,
    }


def _run(args) -> int:
    import asyncio
    import os

    token = args.operator_token or os.environ.get("ESCROW_OPERATOR_TOKEN")
    if not token:
        print("give --operator-token (or set ESCROW_OPERATOR_TOKEN)")
        return 2

    local: dict = {}

    async def read_local_outbox(phone: str) -> str | None:
        """A development service keeps codes in its database: read them with the same ESCROW_* settings."""
        from service.consumers.sms import outbox_messages
        from service.core.settings import get_settings
        from service.db.engine import make_engines
        from service.security.keys import load_keys

        if not local:
            settings = get_settings()
            local["engines"], local["keys"] = make_engines(settings), load_keys(settings)
        messages = await outbox_messages(local["engines"].reader, local["keys"].phone, phone, 1)
        return messages[-1]["code"] if messages else None

    async def go():
        try:
            async with httpx.AsyncClient(base_url=args.url, timeout=30) as client:
                return await run_demo(client, token, read_code=read_local_outbox)
        finally:
            if local:
                await local["engines"].dispose()

    try:
        asyncio.run(go())
    except DemoError as exc:
        print(f"\ndemo stopped: {exc}")
        return 1
    except httpx.HTTPError as exc:
        print(f"\ncannot reach the service at {args.url}: {exc}")
        return 1
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="play the whole story over HTTP against a running service (empty database)")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--operator-token", default=None, help="the operator's token (default: $ESCROW_OPERATOR_TOKEN)")
    p.set_defaults(func=_run)
