"""The incremental risk counters never drift: after a random history driven over HTTP (buys, asks,
confirms, rejects, cancels, refunds, complaints and answers, clock moves that expire holds and cards
and make complaints overdue), `recompute` rebuilds every merchant's daily counters and all-time totals
from cards, redemptions and complaints, finds them equal to what `record()` kept, and finds every stored
code equal to a fresh classify of the recomputed indicators."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from api_tests.factories import (
    buy_card,
    create_merchant,
    create_regulator,
    file_complaint,
    health,
    move_clock_to,
    parse_time,
    publish_count,
    publish_stored_value,
    put_policy,
    register_consumer,
)
from service.db.models import MerchantDaily, MerchantHealth
from service.health.recompute import recompute


async def _random_history(client, rng: random.Random, steps: int, check=None, consumers_n: int = 4) -> None:
    now = parse_time((await move_clock_to(client, datetime.now(UTC) + timedelta(seconds=1)))["now"])
    merchants = [await create_merchant(client, f"Shop {i}", rng.choice(["fitness", "beauty"])) for i in range(3)]
    products = []
    for m in merchants:
        products.append(
            (
                m,
                await publish_stored_value(
                    client,
                    m,
                    price=rng.choice([9_999, 10_000, 30_001]),
                    face_value=rng.choice([30_001, 40_000]),
                    valid_days=rng.choice([20, 365]),
                ),
            )
        )
        products.append(
            (
                m,
                await publish_count(
                    client, m, price=rng.choice([10_001, 20_000]), uses=rng.choice([3, 7]), valid_days=365
                ),
            )
        )
    consumers = [await register_consumer(client, f"Consumer {i}") for i in range(consumers_n)]
    regulator = await create_regulator(client)
    owner = {c["id"]: c for c in consumers}
    cards: list[dict] = []
    asks: list[dict] = []
    complaints: list[tuple[dict, dict]] = []
    for step in range(steps):
        if check is not None and step % 15 == 14:
            await check()
        action = rng.choices(
            ["buy", "ask", "answer", "refund", "complain", "respond", "resolve", "clock"],
            weights=[5, 6, 6, 2, 3, 2, 2, 2],
        )[0]
        if action == "buy" or not cards:
            merchant, product = rng.choice(products)
            r = await client.post(
                "/v1/cards",
                json={
                    "product_id": product["id"],
                    "payment": {"method": "wechat_pay", "reference": f"wx-{rng.getrandbits(40)}"},
                },
                headers=rng.choice(consumers)["headers"],
            )
            assert r.status_code in (201, 409), r.text  # 409: a delisted merchant sells nothing
            if r.status_code == 201:
                cards.append(r.json())
        elif action == "ask":
            card = rng.choice(cards)
            merchant = next(m for m in merchants if m["id"] == card["merchant_id"])
            body = {"amount": rng.randint(1, 15_000)} if card["type"] == "stored_value" else {"uses": rng.randint(1, 2)}
            r = await client.post(f"/v1/cards/{card['id']}/redemptions", json=body, headers=merchant["headers"])
            assert r.status_code in (201, 409), r.text  # 409: not enough left, or the card has ended
            if r.status_code == 201:
                asks.append(r.json())
        elif action == "answer" and asks:
            a = asks.pop(rng.randrange(len(asks)))
            verb = rng.choices(["confirm", "reject", "cancel"], weights=[6, 3, 1])[0]
            party = (
                next(m for m in merchants if m["id"] == a["merchant_id"])
                if verb == "cancel"
                else owner[a["consumer_id"]]
            )
            r = await client.post(f"/v1/redemptions/{a['id']}/{verb}", headers=party["headers"])
            assert r.status_code in (200, 409), r.text  # 409: expired or voided by a refund meanwhile
        elif action == "refund":
            card = rng.choice(cards)
            r = await client.post(f"/v1/cards/{card['id']}/refund", headers=owner[card["consumer_id"]]["headers"])
            assert r.status_code in (200, 409), r.text
        elif action == "complain":
            who, merchant = rng.choice(consumers), rng.choice(merchants)
            complaints.append((merchant, await file_complaint(client, who, merchant, text=f"complaint {rng.random()}")))
        elif action == "respond" and complaints:
            merchant, c = rng.choice(complaints)
            r = await client.post(
                f"/v1/complaints/{c['id']}/response", json={"text": "sorry"}, headers=merchant["headers"]
            )
            assert r.status_code in (200, 409), r.text  # 409: answered before
        elif action == "resolve" and complaints:
            merchant, c = complaints.pop(rng.randrange(len(complaints)))
            verdict = rng.choice(["dismissed", "dismissed", "upheld", "mediated"])
            r = await client.post(
                f"/v1/complaints/{c['id']}/resolution", json={"resolution": verdict}, headers=regulator["headers"]
            )
            assert r.status_code in (200, 409), r.text  # 409: resolved before
        elif action == "clock":
            now += rng.choice(
                [timedelta(minutes=20), timedelta(hours=25), timedelta(days=3), timedelta(days=16), timedelta(days=30)]
            )
            await move_clock_to(client, now)


@pytest.mark.parametrize("seed", [11, 23, 2026])
async def test_incremental_counters_equal_a_full_recompute_after_a_random_history(client, ctx, seed):
    rng = random.Random(seed)

    async def check():
        report = await recompute(ctx.engines.writer)
        assert report["differences"] == [] and report["codes"] == [], report

    await _random_history(client, rng, steps=70, check=check)
    report = await recompute(ctx.engines.writer)
    assert report["differences"] == [] and report["codes"] == [], report
    assert (
        report["ok"] and report["merchants"] == 3 and report["daily_rows_stored"] == report["daily_rows_recomputed"] > 0
    )
    assert report["written"] is False


# Policies whose defences bite within a short history: small consumer gates, and each switch both ways.
DEFENCES = [
    {"min_refund_consumers": 2, "min_rejection_consumers": 2, "min_complaint_consumers": 2},
    {
        "min_refund_consumers": 3,
        "min_rejection_consumers": 1,
        "min_complaint_consumers": 1,
        "complaint_needs_card": False,
        "complaint_once_per_consumer": False,
        "dismissed_complaints_count": True,
    },
    {
        "min_refund_consumers": 1,
        "min_rejection_consumers": 3,
        "min_complaint_consumers": 2,
        "complaint_needs_card": True,
        "complaint_once_per_consumer": False,
        "complaints": {"yellow": 2, "red": 4},
        "overdue_complaints": {"yellow": 2, "red": 3},
    },
]


@pytest.mark.parametrize("seed, defences", [(5, 0), (17, 1), (41, 2)])
async def test_recompute_agrees_with_the_incremental_path_under_the_abuse_defences(client, ctx, seed, defences):
    rng = random.Random(seed)
    await put_policy(client, DEFENCES[defences])

    async def check():
        report = await recompute(ctx.engines.writer)
        assert report["differences"] == [] and report["codes"] == [], report

    await _random_history(client, rng, steps=70, check=check, consumers_n=7)
    report = await recompute(ctx.engines.writer)
    assert report["ok"], report
    # The rows the defences judge by are there, and the recompute checked them.
    from service.db.models import MerchantConsumerDay

    async with ctx.engines.writer.connect() as conn:
        from sqlalchemy import func, select

        n = (await conn.execute(select(func.count()).select_from(MerchantConsumerDay.__table__))).scalar()
    assert n > 0


async def test_recompute_finds_a_drifted_counter_and_writes_the_true_figures(client, ctx):
    shop = await create_merchant(client)
    product = await publish_stored_value(client, shop, price=10_000, face_value=12_000)
    for i in range(3):
        await buy_card(client, await register_consumer(client, f"C{i}"), product)
    assert (await recompute(ctx.engines.writer))["ok"]

    # Someone edits the stored counters behind the service's back.
    daily, totals = MerchantDaily.__table__, MerchantHealth.__table__
    async with ctx.engines.writer.begin() as conn:
        await conn.execute(update(daily).where(daily.c.merchant_id == shop["id"]).values(issued=daily.c.issued + 7))
        await conn.execute(update(totals).where(totals.c.merchant_id == shop["id"]).values(cards_sold=99))
    report = await recompute(ctx.engines.writer)
    assert not report["ok"] and report["merchants_differing"] == [shop["id"]]
    found = {(d["field"], d["day"] == "all_time"): (d["stored"], d["recomputed"]) for d in report["differences"]}
    assert found[("issued", False)] == (30_007, 30_000)
    assert found[("cards_sold", True)] == (99, 3)

    report = await recompute(ctx.engines.writer, write=True, writer=ctx.writer)
    assert report["written"] is True
    assert (await recompute(ctx.engines.writer))["ok"]
    h = await health(client, shop)
    assert (h["indicators"]["all_time_cards_sold"], h["indicators"]["window_issued"]) == (3, 30_000)


async def test_cli_risk_recompute_is_registered():
    import contextlib
    import io

    from service.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["risk", "recompute", "--help"])
    assert exit_.value.code == 0 and "--check" in out.getvalue()
