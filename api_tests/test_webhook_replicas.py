"""Two service processes on one database share the webhook outbox: each event is delivered exactly
once in the normal case (SKIP LOCKED claims on PostgreSQL, the writer's lock on SQLite)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
from standardwebhooks.webhooks import Webhook

from api_tests.conftest import record
from api_tests.realserver import (
    ON_POSTGRES,
    OPERATOR_TOKEN,
    RealServer,
    fresh_database,
    gather_limited,
    new_consumer,
    new_count_product,
    new_merchant,
)
from api_tests.webhook_receiver import Receiver
from service.event_log.event_types import MONEY_TYPES

CONSUMERS = 24


async def events_seen(http, types: tuple[str, ...]) -> list[dict]:
    items, after = [], None
    for _ in range(1000):
        path = f"/v1/events?limit=500&types={','.join(types)}" + (f"&after={after}" if after else "")
        body = await http.expect(200, "GET", path, OPERATOR_TOKEN)
        items += body["items"]
        if not body["items"]:
            return items
        after = body["next_cursor"]
    raise AssertionError("the event listing did not end")


async def test_two_processes_deliver_each_event_exactly_once(capsys):
    db = await fresh_database("escrow_crash_webhooks")
    data_dir = Path(tempfile.mkdtemp(prefix="escrow-webhooks-"))
    fast = {"ESCROW_WEBHOOK_POLL_SECONDS": "0.1", "ESCROW_WEBHOOK_RETRY_SECONDS": "0.2,0.5,1"}
    a = RealServer(data_dir, db, "a", **fast)
    b = RealServer(data_dir, db, "b", **fast)
    clients = []
    try:
        a.migrate()
        await a.start()
        await b.start()
        ha, hb = a.client(32), b.client(32)
        clients += [ha, hb]
        with Receiver() as receiver:
            endpoint = await ha.expect(
                201,
                "POST",
                "/v1/webhook-endpoints",
                OPERATOR_TOKEN,
                {"url": receiver.url, "event_types": list(MONEY_TYPES)},
            )
            gym = await new_merchant(ha)
            product = await new_count_product(ha, gym, uses=10)

            async def customer(i: int) -> None:
                mine, other = (ha, hb) if i % 2 else (hb, ha)
                c = await new_consumer(mine, i)
                card = await mine.expect(
                    201,
                    "POST",
                    "/v1/cards",
                    c["token"],
                    {"product_id": product["id"], "payment": {"method": "wechat_pay", "reference": f"wx-r-{i}"}},
                )
                for _ in range(2):
                    hold = await other.expect(
                        201, "POST", f"/v1/cards/{card['id']}/redemptions", gym["api_key"], {"uses": 1}
                    )
                    await mine.expect(200, "POST", f"/v1/redemptions/{hold['id']}/confirm", c["token"], {})

            await gather_limited(12, [customer(i) for i in range(CONSUMERS)])

            expected = {e["id"] for e in await events_seen(ha, MONEY_TYPES)}
            assert len(expected) == CONSUMERS * 5
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if {x.headers["webhook-id"] for x in receiver.received} >= expected:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # time for a second copy to arrive, if one were to
            ids = Counter(x.headers["webhook-id"] for x in receiver.received)
            assert set(ids) == expected
            assert [i for i, n in ids.items() if n > 1] == [], "an event was delivered twice"
            for x in receiver.received:
                Webhook(endpoint["secret"]).verify(x.body, x.headers)
            assert {orjson.loads(x.body)["type"] for x in receiver.received} == {
                "card.purchased",
                "redemption.requested",
                "redemption.confirmed",
            }
        record("webhook deliveries counted", len(receiver.received))
        with capsys.disabled():
            print(
                f"\nwebhooks, two processes [{'PostgreSQL' if ON_POSTGRES else 'SQLite'}]: {len(expected)} events, "
                f"{len(receiver.received)} deliveries, each exactly once"
            )
    finally:
        for h in clients:
            await h.close()
        for s in (a, b):
            s.stop()
        await db.drop()
        shutil.rmtree(data_dir, ignore_errors=True)
