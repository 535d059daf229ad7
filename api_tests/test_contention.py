"""Contention against real servers: one hot card, one hot merchant, two processes on one database.

- 100 concurrent asks for one use each on a 50-use card: exactly 50 holds, never over-committed;
  then every hold confirmed twice at once while the consumer refunds the card: each redemption
  settles once, the card's parts add up to its price.
- 200 purchases of one merchant's product at once: all in escrow, one purchase entry each.
- A request whose read the client abandoned (send, cancel the read, close) and then resent with the
  same Idempotency-Key moves money once.
- Two server processes on the same database (the same PostgreSQL database when
  ESCROW_TEST_DATABASE_URL is set, else the same SQLite file), traffic split between them, retries
  crossing from one to the other: the ledger stays one chain (sequence 0..n-1, no duplicates,
  `escrow ledger verify` OK) and every invariant holds.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from api_tests.conftest import record
from api_tests.realserver import (
    ON_POSTGRES,
    OPERATOR_TOKEN,
    Http,
    RealServer,
    all_entries,
    fresh_database,
    gather_limited,
    ledger_verify,
    new_auditor,
    new_consumer,
    new_count_product,
    new_merchant,
    parsed,
    reconciliation_ok,
)


@pytest.fixture(scope="module")
async def env():
    db = await fresh_database("escrow_crash_contention")
    data_dir = Path(tempfile.mkdtemp(prefix="escrow-contention-"))
    a = RealServer(data_dir, db, "a")
    state = {"db": db, "data_dir": data_dir, "a": a, "servers": [a], "clients": []}
    try:
        a.migrate()
        await a.start()
        http = a.client(220)
        state["clients"].append(http)
        state["http"] = [http]
        state["auditor"] = (await new_auditor(http))["api_key"]
        state["merchant"] = await new_merchant(http, "Hot Gym 热门健身")
        state["consumers"] = await gather_limited(20, [new_consumer(http, i) for i in range(20)])
        yield state
    finally:
        for c in state["clients"]:
            await c.close()
        for s in state["servers"]:
            s.stop()
        await db.drop()
        if state.get("passed"):  # keep the servers' logs for a failure
            shutil.rmtree(data_dir, ignore_errors=True)


def pick(clients: list[Http], i: int) -> Http:
    return clients[i % len(clients)]


async def card_state(http: Http, card_id: str) -> dict:
    got = await http.expect(200, "GET", f"/v1/cards/{card_id}", OPERATOR_TOKEN)
    b = got["balance"]
    assert got["price"] == b["escrow"] + b["released"] + b["refunded"], got
    assert 0 <= b["held"] <= b["escrow"], got
    assert 0 <= b["units_used"] and 0 <= b["units_held"] and b["units_used"] + b["units_held"] <= b["units_total"], got
    return got


async def hot_card(clients: list[Http], env: dict, uses: int, asks: int) -> dict:
    """`asks` concurrent one-use asks on a `uses`-use card, then double confirms racing a refund."""
    http = clients[0]
    merchant, consumer = env["merchant"], env["consumers"][0]
    product = await new_count_product(http, merchant, price=10_007, uses=uses)
    card = await http.expect(
        201,
        "POST",
        "/v1/cards",
        consumer["token"],
        {"product_id": product["id"], "payment": {"method": "alipay", "reference": f"ali-{secrets.token_hex(6)}"}},
    )

    async def ask(i):
        return await pick(clients, i).request(
            "POST",
            f"/v1/cards/{card['id']}/redemptions",
            merchant["api_key"],
            {"uses": 1},
            key=f"hot-ask-{card['id']}-{i}",
        )

    answers = await asyncio.gather(*(ask(i) for i in range(asks)))
    statuses = Counter(a.status for a in answers)
    assert statuses == Counter({201: uses, 409: asks - uses}), statuses
    assert all(a.body["error"]["code"] == "insufficient_balance" for a in answers if a.status == 409)
    holds = [a.body for a in answers if a.status == 201]
    got = await card_state(http, card["id"])
    assert got["balance"]["units_held"] == uses and got["balance"]["units_available"] == 0, got

    # Every hold confirmed twice at once (through different processes when there are two), while the
    # consumer refunds the card part-way: each redemption settles once, confirmed or cancelled.
    async def confirm(i, h):
        return h["id"], await pick(clients, i).request("POST", f"/v1/redemptions/{h['id']}/confirm", consumer["token"])

    tasks = [confirm(i, h) for i, h in enumerate(holds) for _ in range(2)]
    half = len(tasks) // 2
    refund_task = pick(clients, 1).request(
        "POST", f"/v1/cards/{card['id']}/refund", consumer["token"], key=f"hot-refund-{card['id']}"
    )
    results = await asyncio.gather(*tasks[:half], refund_task, *tasks[half:])
    refund = results[half]
    confirms = results[:half] + results[half + 1 :]
    ok = Counter(rid for rid, a in confirms if a.status == 200)
    assert all(n == 1 for n in ok.values()), "a redemption was confirmed twice"
    for _rid, a in confirms:
        assert a.status in (200, 409), a.body
        if a.status == 409:
            assert a.body["error"]["code"] == "redemption_not_pending", a.body
    released = sum(a.body["release_amount"] for rid, a in confirms if a.status == 200)
    got = await card_state(http, card["id"])
    b = got["balance"]
    assert b["held"] == 0 and b["units_held"] == 0 and b["units_used"] == len(ok), got
    if refund.status == 409:
        # The refund came after every confirm had committed (a batch on the other process can take them
        # all): nothing was left to refund, and every hold was confirmed.
        assert refund.body["error"]["code"] == "nothing_to_refund", refund.body
        assert len(ok) == uses and got["status"] != "refunded", got
        assert b["escrow"] == 0 and b["released"] == released == got["price"] and b["refunded"] == 0, got
    else:
        assert refund.status == 200, refund.body
        assert got["status"] == "refunded", got
        assert b["released"] == released + refund.body["merchant_share"], (got, released, refund.body)
        assert b["refunded"] == refund.body["amount"], got
    refunds = int(refund.status == 200)

    entries = [parsed(e) for e in await all_entries(http, env["auditor"])]
    mine = [e for e in entries if e.get("card_id") == card["id"]]
    kinds = Counter(e["kind"] for e in mine)
    assert (
        kinds["purchase"] == 1 and kinds["hold"] == uses and kinds["release"] == len(ok) and kinds["refund"] == refunds
    )
    assert kinds["void"] == uses - len(ok), kinds  # the refund voided every hold not confirmed
    assert {e["redemption_id"] for e in mine if e["kind"] == "release"} == set(ok)
    return {"card": card["id"], "confirmed": len(ok), "refund": refund.body}


async def hot_merchant(clients: list[Http], env: dict, n: int) -> None:
    http = clients[0]
    auditor = env["auditor"]
    product = await new_count_product(http, env["merchant"], price=19_900, uses=4)
    before = await reconciliation_ok(http, auditor)
    consumers = env["consumers"]

    async def buy(i):
        c = consumers[i % len(consumers)]
        return await pick(clients, i).request(
            "POST",
            "/v1/cards",
            c["token"],
            {
                "product_id": product["id"],
                "payment": {"method": "wechat_pay", "reference": f"wx-hot-{i}-{secrets.token_hex(4)}"},
            },
            key=f"hot-buy-{product['id']}-{i}",
        )

    answers = await asyncio.gather(*(buy(i) for i in range(n)))
    assert Counter(a.status for a in answers) == Counter({201: n}), [a.body for a in answers if a.status != 201][:3]
    ids = {a.body["id"] for a in answers}
    seqs = [a.body["ledger_seq"] for a in answers]
    assert len(ids) == n and len(set(seqs)) == n
    after = await reconciliation_ok(http, auditor)
    assert after["paid_in"] - before["paid_in"] == n * 19_900, (before, after)
    entries = {e["seq"]: parsed(e) for e in await all_entries(http, auditor)}
    for a in answers:
        e = entries[a.body["ledger_seq"]]
        assert e["kind"] == "purchase" and e["card_id"] == a.body["id"] and e["amount"] == 19_900, e
    assert sum(1 for e in entries.values() if e["kind"] == "purchase" and e.get("product_id") == product["id"]) == n


async def abandon(port: int, raw: bytes, delay: float) -> None:
    """Send a request and give up on its answer: close the connection after `delay` seconds."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.write(raw)
    await writer.drain()
    try:
        await asyncio.wait_for(reader.read(1), delay)
    except TimeoutError:
        pass
    writer.close()


async def timeout_retries(clients: list[Http], env: dict, rounds: int, rng: random.Random) -> dict:
    """Send, cancel the read, resend with the same key (through the other process when there are two)."""
    http = clients[0]
    merchant = env["merchant"]
    consumer = env["consumers"][1]
    product = await new_count_product(http, merchant, price=30_001, uses=3)
    stats = Counter()
    refs = []
    cards = []
    for i in range(rounds):
        ref = f"wx-retry-{i}-{secrets.token_hex(4)}"
        refs.append(ref)
        key = f"retry-buy-{ref}"
        body = {"product_id": product["id"], "payment": {"method": "wechat_pay", "reference": ref}}
        first, second = pick(clients, i), pick(clients, i + 1)
        await abandon(
            first.port,
            Http.build("POST", "/v1/cards", consumer["token"], body, key, first.port),
            rng.choice((0.0, 0.001, 0.005, 0.02, 0.05)),
        )
        a = await second.request("POST", "/v1/cards", consumer["token"], body, key)
        assert a.status == 201, a.body
        stats["replayed" if a.replayed else "fresh"] += 1
        cards.append(a.body)
        # ask and confirm on the new card the same way
        ask_key = f"retry-ask-{ref}"
        raw = Http.build(
            "POST", f"/v1/cards/{a.body['id']}/redemptions", merchant["api_key"], {"uses": 1}, ask_key, first.port
        )
        await abandon(first.port, raw, rng.choice((0.0, 0.002, 0.01, 0.03)))
        h = await second.request(
            "POST", f"/v1/cards/{a.body['id']}/redemptions", merchant["api_key"], {"uses": 1}, ask_key
        )
        assert h.status == 201, h.body
        stats["replayed" if h.replayed else "fresh"] += 1
        conf_key = f"retry-confirm-{ref}"
        path = f"/v1/redemptions/{h.body['id']}/confirm"
        await abandon(
            first.port,
            Http.build("POST", path, consumer["token"], None, conf_key, first.port),
            rng.choice((0.0, 0.002, 0.01, 0.03)),
        )
        c = await second.request("POST", path, consumer["token"], None, conf_key)
        assert c.status == 200 and c.body["status"] == "confirmed", c.body
        stats["replayed" if c.replayed else "fresh"] += 1
        # and once more, later: the first answer again, nothing moves
        again = await first.request("POST", path, consumer["token"], None, conf_key)
        assert again.status == 200 and again.replayed and again.body == c.body, again.body

    # Money moved once per key: one card per payment reference, one hold and one release per card.
    mine = []
    after = None
    for _ in range(100):
        page = await http.expect(
            200, "GET", "/v1/consumers/me/cards?limit=200" + (f"&after={after}" if after else ""), consumer["token"]
        )
        mine.extend(page["items"])
        after = page["next_cursor"]
        if after is None:
            break
    by_ref = Counter(c["payment"]["reference"] for c in mine)
    assert all(by_ref[r] == 1 for r in refs), {r: by_ref[r] for r in refs if by_ref[r] != 1}
    entries = [parsed(e) for e in await all_entries(http, env["auditor"])]
    per_card = {c["id"]: Counter() for c in cards}
    for e in entries:
        if e.get("card_id") in per_card:
            per_card[e["card_id"]][e["kind"]] += 1
    for card_id, kinds in per_card.items():
        assert kinds == Counter({"purchase": 1, "hold": 1, "release": 1}), (card_id, kinds)
        got = await card_state(http, card_id)
        assert got["balance"]["units_used"] == 1 and got["balance"]["released"] == 10_000, got
    return stats


# ---------------------------------------------------------------------------------------------


async def test_hot_card_100_concurrent_asks_never_overcommit(env):
    await hot_card(env["http"], env, uses=50, asks=100)
    await reconciliation_ok(env["http"][0], env["auditor"])


async def test_hot_merchant_200_purchases_at_once(env):
    await hot_merchant(env["http"], env, 200)


async def test_retry_after_client_timeout_moves_money_once(env, rng):
    await timeout_retries(env["http"], env, rounds=8, rng=rng)
    await reconciliation_ok(env["http"][0], env["auditor"])


async def test_two_processes_on_one_database_keep_one_chain(env, capsys, rng):
    a: RealServer = env["a"]
    # The second process shares the first one's database (and data folder, so the same signing key).
    b = RealServer(env["data_dir"], env["db"], "b")
    env["servers"].append(b)
    await b.start()
    hb = b.client(220)
    env["clients"].append(hb)
    clients = [env["http"][0], hb]

    hot = await hot_card(clients, env, uses=40, asks=80)
    await hot_merchant(clients, env, 120)
    stats = await timeout_retries(clients, env, rounds=6, rng=rng)

    # Both processes see the same books.
    ra = await reconciliation_ok(clients[0], env["auditor"])
    rb = await reconciliation_ok(clients[1], env["auditor"])
    assert ra == rb, (ra, rb)
    entries = await all_entries(clients[1], env["auditor"])
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(len(seqs))), "duplicate or missing sequence numbers"
    assert len({e["chain_hash"] for e in entries}) == len(entries)
    assert ra["ledger"]["entries"] == len(entries)
    cp_a = await clients[0].expect(200, "GET", "/v1/ledger/checkpoint")
    cp_b = await clients[1].expect(200, "GET", "/v1/ledger/checkpoint")
    assert cp_a["tree_size"] <= len(entries) and cp_b["tree_size"] <= len(entries)

    b.stop()
    a.stop()
    line = ledger_verify(a.env)
    record("two-process ledger entries", len(entries))
    record("client-timeout retries", sum(stats.values()))
    with capsys.disabled():
        print(
            f"\ncontention [{'PostgreSQL' if ON_POSTGRES else 'SQLite'}]: two processes on one database, "
            f"{len(entries)} entries in one chain; hot card {hot['confirmed']} confirmed of 40 holds; "
            f"client-timeout retries {dict(stats)}; {line[:60]}…"
        )
    env["passed"] = True
