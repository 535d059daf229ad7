"""Custody over HTTP (SPEC §12): a day of activity settles into a batch the ledger agrees with to the fen;
the bank downloads it (JSON, CSV), reports results, and uploads its statement, which is matched both ways."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import orjson

from api_tests.factories import (
    OP,
    answer,
    ask,
    assert_error,
    buy_card,
    create_auditor,
    create_merchant,
    create_regulator,
    inclusion_proof,
    ledger_entries,
    ledger_public_key,
    move_clock_to,
    new_checkpoint,
    publish_count,
    publish_stored_value,
    redeem,
    refund,
    register_consumer,
)
from ledger.receipt import verify_receipt
from service.ledger_api.service import verify_ledger

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=SHANGHAI)


def a_future_day(days: int = 3) -> date:
    return (datetime.now(UTC).astimezone(SHANGHAI) + timedelta(days=days)).date()


def statement(lines: list[tuple]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["date", "direction", "amount", "reference"])
    w.writerows(lines)
    return out.getvalue().encode()


async def upload(client, bank: dict, body: bytes, expect: int = 201) -> dict:
    r = await client.post("/v1/bank-statements", content=body, headers={**bank["headers"], "Content-Type": "text/csv"})
    assert r.status_code == expect, r.text
    return r.json()


async def close(client, party: dict, day: date, expect: int = 201) -> dict:
    r = await client.post("/v1/settlements", json={"date": day.isoformat()}, headers=party["headers"])
    assert r.status_code == expect, r.text
    return r.json()


def day_of_entry(entry: dict) -> date:
    return datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).astimezone(SHANGHAI).date()


async def ledger_day(client, bank: dict, day: date) -> tuple[dict[str, int], list[dict], list[dict]]:
    """Payouts per merchant, refund entries and purchase entries of `day`, read from the ledger itself."""
    payouts: dict[str, int] = {}
    refunds, purchases = [], []
    for e in await ledger_entries(client, bank, limit=200):
        if day_of_entry(e) != day:
            continue
        body = orjson.loads(e["canonical"])
        if e["kind"] == "release":
            payouts[body["merchant_id"]] = payouts.get(body["merchant_id"], 0) + body["amount"]
        elif e["kind"] == "refund":
            if body["merchant_share"]:
                payouts[body["merchant_id"]] = payouts.get(body["merchant_id"], 0) + body["merchant_share"]
            refunds.append(body)
        elif e["kind"] == "purchase":
            purchases.append(body)
    return payouts, refunds, purchases


async def a_day(client):
    """Purchases, confirmations, a quit refund and a default on one Shanghai day; a release the next day."""
    day = a_future_day()
    await move_clock_to(client, local(day, 9))
    bank = await create_auditor(client)
    regulator = await create_regulator(client)
    gym = await create_merchant(client, "Iron Gym 铁馆健身")
    spa = await create_merchant(client, "Lotus Spa 莲花水疗", "beauty")
    runaway = await create_merchant(client, "Runaway Nails 跑路美甲", "beauty")
    li, han = await register_consumer(client, "Li Lei 李雷"), await register_consumer(client, "Han Meimei 韩梅梅")
    gym_card = await publish_stored_value(client, gym, price=100_000, face_value=120_000)
    spa_course = await publish_count(client, spa, price=10_001, uses=3)
    quit_course = await publish_count(client, spa, price=10_000, uses=10, list_price=1_500)
    nails = await publish_count(client, runaway, price=5_000, uses=5)

    a = await buy_card(client, li, gym_card, reference="wx-day-a")
    b = await buy_card(client, han, spa_course, reference="wx-day-b")
    c = await buy_card(client, li, quit_course, reference="wx-day-c")
    d = await buy_card(client, han, nails, reference="wx-day-d")
    await redeem(client, gym, li, a, amount=12_000)  # 10000 released
    await redeem(client, spa, han, b, uses=1)  # 3333
    await redeem(client, spa, li, c, uses=1)  # 1000
    quit = await refund(client, li, c)  # consumer_quit: 10000 - 1500 = 8500 back, 500 to the spa
    assert quit["rule"] == "consumer_quit" and quit["amount"] == 8_500 and quit["merchant_share"] == 500
    r = await client.post(
        f"/v1/merchants/{runaway['id']}/default", json={"reason": "Ran away 跑路"}, headers=regulator["headers"]
    )
    assert r.status_code == 200, r.text
    await move_clock_to(client, local(day, 23, 50))
    r = await client.post("/v1/settlements", json={"date": day.isoformat()}, headers=bank["headers"])
    assert_error(r, 409, "day_not_ended")
    await move_clock_to(client, local(day, 23, 55))
    late = await ask(client, gym, a, amount=1_200)  # confirmed after midnight: the next day's
    await move_clock_to(client, local(day + timedelta(days=1), 0, 5))
    await answer(client, li, late, "confirm")
    await move_clock_to(client, local(day + timedelta(days=1), 1))  # before the sweeper's hour (02:00)
    return {"day": day, "bank": bank, "gym": gym, "spa": spa, "runaway": runaway, "cards": [a, b, c, d]}


async def test_a_day_settles_to_the_fen_and_the_bank_reconciles_it(client, ctx):
    w = await a_day(client)
    day, bank = w["day"], w["bank"]
    batch = await close(client, bank, day)
    payouts, refund_entries, purchases = await ledger_day(client, bank, day)

    # Payouts: every merchant's releases and merchant shares of the day, to the fen.
    assert {p["merchant_id"]: p["amount"] for p in batch["payouts"]} == payouts
    assert payouts == {w["gym"]["id"]: 10_000, w["spa"]["id"]: 3_333 + 1_000 + 500}
    # Refunds: one instruction per refund entry, by the original method and reference.
    by_card = {f["card_id"]: f for f in batch["refunds"]}
    assert sorted(by_card) == sorted(e["card_id"] for e in refund_entries)
    c, d = w["cards"][2], w["cards"][3]
    assert by_card[c["id"]] == {**by_card[c["id"]], "amount": 8_500, "method": "wechat_pay", "reference": "wx-day-c"}
    assert by_card[d["id"]] == {**by_card[d["id"]], "amount": 5_000, "method": "wechat_pay", "reference": "wx-day-d"}
    assert batch["totals"]["payouts"] == 14_833 and batch["totals"]["refunds"] == 13_500
    ids = [p["id"] for p in batch["payouts"]] + [f["id"] for f in batch["refunds"]]
    assert len(set(ids)) == len(ids) and all(i.startswith(("pay_", "rfi_")) for i in ids)

    # Closing again answers the same batch; reading it too.
    assert await close(client, bank, day, expect=200) == batch
    r = await client.get(f"/v1/settlements/{batch['id']}", headers=OP)
    assert r.status_code == 200 and r.json() == batch

    # The CSV for the bank's systems carries the same instructions and totals.
    r = await client.get(f"/v1/settlements/{batch['id']}", params={"format": "csv"}, headers=bank["headers"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sum(int(x["amount"]) for x in rows if x["kind"] == "payout") == batch["totals"]["payouts"]
    assert sum(int(x["amount"]) for x in rows if x["kind"] == "refund") == batch["totals"]["refunds"]
    assert {x["instruction_id"] for x in rows} == set(ids)
    assert {(x["method"], x["reference"]) for x in rows if x["kind"] == "refund"} == {
        ("wechat_pay", "wx-day-c"),
        ("wechat_pay", "wx-day-d"),
    }

    # The bank's statement of the day, every line: purchases in, instructions out. It matches completely.
    credits = [
        (day.isoformat(), "credit", card["price"], f"wechat_pay:{card['payment']['reference']}") for card in w["cards"]
    ]
    debits = [(day.isoformat(), "debit", x["amount"], x["id"]) for x in batch["payouts"] + batch["refunds"]]
    assert len(purchases) == 4
    full = await upload(client, bank, statement(credits + debits))
    assert full["complete"] is True and len(full["matched"]) == 4 + len(ids), full
    assert full["unmatched_statement_lines"] == [] and full["unmatched_ledger_items"] == []
    assert full["balance"]["agrees"] is True and full["balance"]["difference"] == 0
    assert full["balance"]["bank"]["net"] == sum(x["price"] for x in w["cards"]) - 14_833 - 13_500

    # One unknown credit and one missing payout: exactly those two are reported.
    missing = batch["payouts"][0]
    partial = [x for x in debits if x[3] != missing["id"]] + [(day.isoformat(), "credit", 777, "alipay:nobody-paid")]
    part = await upload(client, bank, statement(credits + partial))
    assert [(x["line"], x["reference"], x["amount"]) for x in part["unmatched_statement_lines"]] == [
        (len(credits) + len(partial) + 1, "alipay:nobody-paid", 777)
    ]
    assert [(x["type"], x["instruction_id"], x["amount"]) for x in part["unmatched_ledger_items"]] == [
        ("payout", missing["id"], missing["amount"])
    ]
    assert part["complete"] is False and part["balance"]["difference"] == 777 + missing["amount"]
    r = await client.get(f"/v1/bank-statements/{part['id']}", headers=OP)
    assert r.status_code == 200 and r.json()["unmatched_ledger_items"] == part["unmatched_ledger_items"]

    # The bank's results: a payout executed, a refund failed; the failed one is listed, and later executed.
    gym_pay = next(p for p in batch["payouts"] if p["merchant_id"] == w["gym"]["id"])
    failed = by_card[d["id"]]
    report = {
        "results": [
            {"instruction_id": gym_pay["id"], "status": "executed", "bank_reference": "CIB-0001"},
            {"instruction_id": failed["id"], "status": "failed", "reason": "Card account closed"},
        ]
    }
    before = len(await ledger_entries(client, bank, limit=200))
    r = await client.post(f"/v1/settlements/{batch['id']}/results", json=report, headers=bank["headers"])
    assert r.status_code == 200, r.text
    after = r.json()
    status = {x["id"]: x["status"] for x in after["payouts"] + after["refunds"]}
    assert status[gym_pay["id"]] == "executed" and status[failed["id"]] == "failed"
    assert sum(s == "open" for s in status.values()) == len(ids) - 2
    # the same report again changes nothing and writes no new entry
    r = await client.post(f"/v1/settlements/{batch['id']}/results", json=report, headers=bank["headers"])
    assert r.status_code == 200 and r.json() == after
    entries = await ledger_entries(client, bank, limit=200)
    assert len(entries) == before + 1 and entries[-1]["kind"] == "settlement_result"
    assert "Card account closed" not in entries[-1]["canonical"]  # free text stays out of the public ledger
    # an executed instruction stays executed
    r = await client.post(
        f"/v1/settlements/{batch['id']}/results",
        headers=bank["headers"],
        json={"results": [{"instruction_id": gym_pay["id"], "status": "failed", "reason": "oops"}]},
    )
    assert_error(r, 409, "instruction_executed")
    r = await client.get("/v1/settlements/instructions", params={"status": "failed"}, headers=bank["headers"])
    assert [x["id"] for x in r.json()["items"]] == [failed["id"]]
    r = await client.get("/v1/settlements/instructions", headers=bank["headers"])
    assert {x["id"] for x in r.json()["items"]} == set(ids) - {gym_pay["id"]}
    # a statement without the failed refund: it is a missing ledger item, and carried as still owed
    again = await upload(client, bank, statement(credits + [x for x in debits if x[3] != failed["id"]]))
    assert [(x["instruction_id"], x["status"]) for x in again["unmatched_ledger_items"]] == [(failed["id"], "failed")]
    owed = {x["id"]: x for x in again["open_instructions"]}
    assert set(owed) == set(ids) - {gym_pay["id"]} and owed[failed["id"]]["on_statement"] is False
    assert owed[failed["id"]]["reason"] == "Card account closed"
    r = await client.post(
        f"/v1/settlements/{batch['id']}/results",
        headers=bank["headers"],
        json={"results": [{"instruction_id": failed["id"], "status": "executed", "bank_reference": "CIB-0002"}]},
    )
    assert r.status_code == 200, r.text
    r = await client.get("/v1/settlements/instructions", params={"status": "failed"}, headers=bank["headers"])
    assert r.json()["items"] == []

    # Every new entry kind passes the full verification (chain, Merkle, per-card sums).
    report = await verify_ledger(ctx.engines.reader, public_key=ctx.keys.public_key)
    assert report["ok"] is True, report


async def test_the_sweeper_closes_yesterday_at_its_hour_once(client):
    w = await a_day(client)
    r = await client.get("/v1/settlements", headers=w["bank"]["headers"])
    assert r.json()["items"] == []  # 01:00: not yet
    await move_clock_to(client, local(w["day"] + timedelta(days=1), 2, 1))
    await move_clock_to(client, local(w["day"] + timedelta(days=1), 3))
    r = await client.get("/v1/settlements", headers=w["bank"]["headers"])
    items = r.json()["items"]
    assert [b["date"] for b in items] == [w["day"].isoformat()], items
    again = await close(client, w["bank"], w["day"], expect=200)
    assert again["id"] == items[0]["id"] and again["totals"] == items[0]["totals"]
    entries = [e for e in await ledger_entries(client, w["bank"], limit=200) if e["kind"] == "settlement_batch"]
    assert len(entries) == 1 and orjson.loads(entries[0]["canonical"])["digest"] == again["digest"]
    # the batch's entry is provable like any other: a receipt against a signed checkpoint
    cp = await new_checkpoint(client, w["bank"])
    verify_receipt(
        entries[0],
        await inclusion_proof(client, entries[0]["seq"], cp["tree_size"]),
        cp,
        await ledger_public_key(client),
    )


async def test_malformed_statements_name_the_line_and_store_nothing(client):
    bank = await create_auditor(client)
    good = "2026-12-01,credit,100,wechat_pay:x\n"
    cases = {
        "date,direction,amount,reference\n" + good + "2026-12-01,credit,100.50,wechat_pay:y\n": "line 3",
        "date,direction,amount,reference\n" + good + "2026-12-01,credit,1e3,wechat_pay:y\n": "line 3",
        "date,direction,amount,reference\n2026-13-01,credit,100,x\n": "line 2",
        "date,direction,amount,reference\n2026-12-01,sideways,100,x\n": "line 2",
        "date,direction,amount,reference\n" + good + good + "2026-12-01,debit,100\n": "line 4",
        "date,direction,amount,reference\n2026-12-01,debit,-5,x\n": "line 2",
        "date;direction;amount;reference\n" + good: "line 1",
    }
    before = len(await ledger_entries(client, bank, limit=200))
    for body, where in cases.items():
        r = await client.post(
            "/v1/bank-statements", content=body.encode(), headers={**bank["headers"], "Content-Type": "text/csv"}
        )
        error = assert_error(r, 422)
        assert error["message"].startswith(where), (body, error)
    assert (
        "integer fen"
        in assert_error(
            await client.post(
                "/v1/bank-statements",
                content=(b"date,direction,amount,reference\n2026-12-01,credit,12.00,x\n"),
                headers={**bank["headers"], "Content-Type": "text/csv"},
            ),
            422,
        )["message"]
    )
    r = await client.post(
        "/v1/bank-statements", content=b"\xff\xfe", headers={**bank["headers"], "Content-Type": "text/csv"}
    )
    assert_error(r, 422)
    r = await client.post("/v1/bank-statements", json={"date": "x"}, headers=bank["headers"])
    assert_error(r, 415)
    r = await client.post(
        "/v1/bank-statements", content=b"x" * 70_000, headers={**bank["headers"], "Content-Type": "text/csv"}
    )
    assert_error(r, 413)
    assert len(await ledger_entries(client, bank, limit=200)) == before


async def test_bad_days_and_results_are_clear_refusals(client):
    bank = await create_auditor(client)
    for bad in ("2026-02-30", "20261201", "yesterday", "2026-1-01"):
        r = await client.post("/v1/settlements", json={"date": bad}, headers=bank["headers"])
        assert_error(r, 422)
    r = await client.post("/v1/settlements", json={"date": a_future_day(400).isoformat()}, headers=bank["headers"])
    assert_error(r, 409, "day_not_ended")
    empty = await close(client, bank, date(2020, 1, 1))
    assert empty["payouts"] == [] and empty["refunds"] == [] and empty["totals"]["total"] == 0
    r = await client.post(
        f"/v1/settlements/{empty['id']}/results",
        headers=bank["headers"],
        json={"results": [{"instruction_id": "pay_nope", "status": "executed", "bank_reference": "x"}]},
    )
    assert_error(r, 404, "instruction_not_found")
    r = await client.post(
        f"/v1/settlements/{empty['id']}/results",
        headers=bank["headers"],
        json={"results": [{"instruction_id": "pay_nope", "status": "executed"}]},
    )
    assert_error(r, 422)
    r = await client.get("/v1/settlements/stl_nope", headers=bank["headers"])
    assert_error(r, 404, "settlement_not_found")
    # the list pages by date
    second = await close(client, bank, date(2020, 1, 2))
    r = await client.get("/v1/settlements", params={"limit": 1}, headers=bank["headers"])
    page = r.json()
    assert [b["id"] for b in page["items"]] == [empty["id"]] and page["next_cursor"] == "2020-01-01"
    r = await client.get("/v1/settlements", params={"limit": 1, "after": page["next_cursor"]}, headers=bank["headers"])
    assert [b["id"] for b in r.json()["items"]] == [second["id"]] and r.json()["next_cursor"] is None


async def test_statement_lines_match_once_by_route_and_amount(client):
    day = a_future_day(2)
    await move_clock_to(client, local(day, 10))
    bank = await create_auditor(client)
    gym = await create_merchant(client)
    li = await register_consumer(client)
    product = await publish_stored_value(client, gym, price=2_000, face_value=2_000)
    one = await buy_card(client, li, product, reference="wx-route-1")
    two = await buy_card(client, li, product, reference="wx-route-2")
    three = await buy_card(client, li, product, reference="wx-route-3")
    d = day.isoformat()
    body = await upload(
        client,
        bank,
        statement(
            [
                (d, "credit", 2_000, "wx-route-1"),  # the bare reference: only one card carries it
                (d, "credit", 2_000, "wechat_pay:wx-route-1"),  # the same purchase twice
                (d, "credit", 1_999, "wechat_pay:wx-route-2"),  # a fen short
                (d, "credit", 2_000, "alipay:wx-route-3"),  # the wrong method
            ]
        ),
    )
    assert [(x["line"], x["ledger_item"]["card_id"]) for x in body["matched"]] == [(2, one["id"])]
    reasons = {x["line"]: x["reason"] for x in body["unmatched_statement_lines"]}
    assert set(reasons) == {3, 4, 5} and "line 2 already matched" in reasons[3] and "2000 fen" in reasons[4]
    assert {x["card_id"] for x in body["unmatched_ledger_items"]} == {two["id"], three["id"]}
    assert body["balance"]["bank"]["credits"] == 7_999 and body["balance"]["ledger"]["credits"] == 6_000


async def test_a_statement_upload_retried_with_its_key_is_stored_once(client):
    bank = await create_auditor(client)
    body = statement([("2026-12-01", "credit", 100, "alipay:nobody")])
    headers = {**bank["headers"], "Content-Type": "text/csv", "Idempotency-Key": "statement-2026-12-01"}
    first = await client.post("/v1/bank-statements", content=body, headers=headers)
    again = await client.post("/v1/bank-statements", content=body, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"] and again.headers.get("idempotent-replayed") == "true"
    other = await client.post("/v1/bank-statements", content=body + b"2026-12-01,credit,5,alipay:x\n", headers=headers)
    assert_error(other, 409, "idempotency_key_reused")
    kinds = [e["kind"] for e in await ledger_entries(client, bank)]
    assert kinds.count("bank_statement") == 1
