"""A property of settlement (SPEC §12): over random days of activity, the batches pay out exactly what the
ledger released (releases and merchant shares of quit refunds) and refund exactly what it refunded, and
paid in = escrow + paid out + refunded. Hypothesis draws the days; a bounded number of examples keeps it
well under a minute."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_tests.conftest import reset_database
from api_tests.factories import (
    OP,
    buy_card,
    create_auditor,
    create_merchant,
    move_clock_to,
    publish_count,
    publish_stored_value,
    register_consumer,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
ACTION = st.tuples(
    st.sampled_from(["buy", "buy", "redeem", "redeem", "refund", "default"]), st.integers(0, 99), st.integers(1, 3)
)
DAYS = st.lists(st.lists(ACTION, max_size=7), min_size=1, max_size=3)


@pytest.fixture(scope="module")
async def module_loop():
    return asyncio.get_running_loop()


async def live_through(client, ctx, days: list[list[tuple]]) -> None:
    await reset_database(ctx)
    first = (datetime.now(UTC).astimezone(SHANGHAI) + timedelta(days=2)).date()
    await move_clock_to(client, datetime.combine(first, time(8), tzinfo=SHANGHAI))
    bank = await create_auditor(client)
    merchants = [await create_merchant(client, f"Shop {i}") for i in range(2)]
    products = []
    for m in merchants:
        products += [
            (m, await publish_count(client, m, price=1_001, uses=3, list_price=500)),
            (m, await publish_stored_value(client, m, price=1_000, face_value=1_200)),
        ]
    consumers = [await register_consumer(client, f"Consumer {i}") for i in range(2)]
    cards: list[tuple[dict, dict, dict]] = []  # (card, consumer, merchant)
    defaulted: set[str] = set()
    for k, actions in enumerate(days):
        day = first + timedelta(days=k)
        for i, (what, pick, units) in enumerate(actions):
            await move_clock_to(client, datetime.combine(day, time(10, i), tzinfo=SHANGHAI))
            if what == "buy" or not cards:
                merchant, product = products[pick % len(products)]
                if merchant["id"] not in defaulted:
                    consumer = consumers[pick % len(consumers)]
                    cards.append((await buy_card(client, consumer, product), consumer, merchant))
            elif what == "redeem":
                card, consumer, merchant = cards[pick % len(cards)]
                body = {"uses": 1} if card["type"] == "count" else {"amount": 100 * units}
                r = await client.post(f"/v1/cards/{card['id']}/redemptions", json=body, headers=merchant["headers"])
                assert r.status_code in (201, 409), r.text
                if r.status_code == 201:
                    r = await client.post(f"/v1/redemptions/{r.json()['id']}/confirm", headers=consumer["headers"])
                    assert r.status_code == 200, r.text
            elif what == "refund":
                card, consumer, _ = cards[pick % len(cards)]
                r = await client.post(f"/v1/cards/{card['id']}/refund", headers=consumer["headers"])
                assert r.status_code in (200, 409), r.text
            elif what == "default" and units == 3:
                merchant = merchants[pick % 2]
                r = await client.post(f"/v1/merchants/{merchant['id']}/default", json={"reason": "gone"}, headers=OP)
                assert r.status_code in (200, 409), r.text
                defaulted.add(merchant["id"])
    last = first + timedelta(days=len(days) - 1)
    await move_clock_to(client, datetime.combine(last + timedelta(days=1), time(3), tzinfo=SHANGHAI))

    paid_out = refunded = 0
    for k in range(len(days)):
        r = await client.post(
            "/v1/settlements", json={"date": (first + timedelta(days=k)).isoformat()}, headers=bank["headers"]
        )
        assert r.status_code in (200, 201), r.text  # the sweeper may have closed it at 02:00
        batch = r.json()
        assert batch["totals"]["payouts"] == sum(p["amount"] for p in batch["payouts"])
        assert batch["totals"]["refunds"] == sum(f["amount"] for f in batch["refunds"])
        paid_out += batch["totals"]["payouts"]
        refunded += batch["totals"]["refunds"]
    r = await client.get("/v1/escrow/reconciliation", headers=bank["headers"])
    assert r.status_code == 200, r.text
    ledger = r.json()["ledger"]
    assert paid_out == ledger["released"] and refunded == ledger["refunded"], (paid_out, refunded, ledger)
    assert ledger["paid_in"] == ledger["escrow"] + paid_out + refunded
    assert r.json()["consistent"] is True


def test_batches_pay_exactly_what_the_ledger_moved(client, ctx, module_loop):
    run = module_loop.run_until_complete

    @settings(max_examples=6, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(days=DAYS)
    def check(days):
        run(live_through(client, ctx, days))

    check()
