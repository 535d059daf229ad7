"""How long closing a settlement day and matching a bank statement take, in process, over HTTP.

    python bench/settlement_bench.py --cards 300 --redemptions 3000
    python bench/settlement_bench.py --database-url postgresql://postgres@127.0.0.1:5432/escrow_bench_settle

One Shanghai day: `--cards` purchases across `--merchants` merchants, `--redemptions` confirmed
redemptions, a tenth of the cards quit (refund with a merchant share). Then the next day: time
`POST /v1/settlements` (the day's entries read, the batch and its instructions written through the
writer), and the statement of the day (every purchase and instruction) uploaded in parts of at most
1,000 lines (the 64 KiB body limit), timing the matching. Prints the figures; checks the statement
matched completely. The PostgreSQL database named is dropped and created again.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api_tests.conftest import OPERATOR_TOKEN, _recreate_pg_database  # noqa: E402
from service.app import asgi_app, build_context, create_app  # noqa: E402
from service.core.settings import Settings  # noqa: E402
from service.core.uscc import check_character  # noqa: E402
from service.ops import migrate  # noqa: E402

OP = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
SH = ZoneInfo("Asia/Shanghai")


async def post(c, url, body, headers, expect=(200, 201)):
    r = await c.post(url, json=body, headers=headers)
    assert r.status_code in expect, r.text
    return r.json()


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as d:
        settings = Settings(
            env="test",
            data_dir=Path(d),
            database_url=args.database_url,
            operator_token=OPERATOR_TOKEN,
            background_tasks=False,
            sqlite_synchronous="NORMAL",
            registration_limit_per_minute=10**6,
        )
        if not settings.is_sqlite:
            await _recreate_pg_database(settings.effective_database_url)
        await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
        ctx = build_context(settings)
        app = create_app(ctx=ctx)
        transport = httpx.ASGITransport(app=asgi_app(app), client=("10.9.0.1", 50000))
        rng = random.Random(7)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            day = (datetime.now(UTC).astimezone(SH) + timedelta(days=2)).date()
            await post(c, "/v1/test/clock", {"now": datetime.combine(day, dtime(8), tzinfo=SH).isoformat()}, OP)
            bank = await post(c, "/v1/auditors", {"name": "bank"}, OP)
            bh = {"Authorization": f"Bearer {bank['api_key']}"}
            merchants, products = [], []
            for i in range(args.merchants):
                uscc_body = "91" + "".join(rng.choice("0123456789") for _ in range(15))
                m = await post(
                    c,
                    "/v1/merchants",
                    {"name": f"Shop {i}", "uscc": uscc_body + check_character(uscc_body), "category": "fitness"},
                    OP,
                )
                m["h"] = {"Authorization": f"Bearer {m['api_key']}"}
                merchants.append(m)
                products.append(
                    await post(
                        c,
                        "/v1/products",
                        {
                            "type": "count",
                            "name": "c",
                            "price": 100_003,
                            "uses": 50,
                            "list_price": 2_500,
                            "valid_days": 365,
                        },
                        m["h"],
                    )
                )
            consumer = await post(c, "/v1/consumers", {"name": "Li", "phone": "13800138000"}, {})
            ch = {"Authorization": f"Bearer {consumer['token']}"}
            cards = []
            for i in range(args.cards):
                k = i % args.merchants
                card = await post(
                    c,
                    "/v1/cards",
                    {
                        "product_id": products[k]["id"],
                        "payment": {"method": "wechat_pay", "reference": f"wx-bench-{i}"},
                    },
                    ch,
                )
                cards.append((card, merchants[k]))
            t0 = time.perf_counter()
            for i in range(args.redemptions):
                card, m = cards[i % len(cards)]
                h = await post(c, f"/v1/cards/{card['id']}/redemptions", {"uses": 1}, m["h"])
                await post(c, f"/v1/redemptions/{h['id']}/confirm", None, ch)
            activity = time.perf_counter() - t0
            for card, _ in cards[::10]:
                await post(c, f"/v1/cards/{card['id']}/refund", None, ch)
            await post(
                c,
                "/v1/test/clock",
                {"now": datetime.combine(day + timedelta(days=1), dtime(1), tzinfo=SH).isoformat()},
                OP,
            )
            size = (await c.get("/v1/escrow/reconciliation", headers=bh)).json()["ledger"]["entries"]
            t0 = time.perf_counter()
            batch = await post(c, "/v1/settlements", {"date": day.isoformat()}, bh, expect=(201,))
            close = time.perf_counter() - t0
            lines = [
                (day.isoformat(), "credit", card["price"], f"wechat_pay:{card['payment']['reference']}")
                for card, _ in cards
            ]
            lines += [(day.isoformat(), "debit", x["amount"], x["id"]) for x in batch["payouts"] + batch["refunds"]]
            matched, t0 = 0, time.perf_counter()
            parts = [lines[i : i + 1000] for i in range(0, len(lines), 1000)]
            for part in parts:
                out = io.StringIO()
                w = csv.writer(out, lineterminator="\n")
                w.writerow(["date", "direction", "amount", "reference"])
                w.writerows(part)
                r = await c.post(
                    "/v1/bank-statements", content=out.getvalue().encode(), headers={**bh, "Content-Type": "text/csv"}
                )
                assert r.status_code == 201, r.text
                body = r.json()
                assert body["unmatched_statement_lines"] == [], body["unmatched_statement_lines"][:3]
                matched += len(body["matched"])
            match = time.perf_counter() - t0
        await ctx.writer.stop()
        await ctx.engines.dispose()
    db = "SQLite" if settings.is_sqlite else "PostgreSQL"
    print(
        f"[{db}] day: {args.cards} purchases, {args.redemptions} confirmed redemptions "
        f"({args.redemptions / activity:.0f} pairs/s in process), {len(cards[::10])} quit refunds; "
        f"ledger {size} entries"
    )
    print(
        f"[{db}] close the day: {close * 1000:.0f} ms for {len(batch['payouts'])} payouts and "
        f"{len(batch['refunds'])} refunds (totals {batch['totals']['payouts']} + {batch['totals']['refunds']} fen)"
    )
    print(
        f"[{db}] statement: {len(lines)} lines in {len(parts)} uploads, {matched} matched, "
        f"{match * 1000:.0f} ms ({match * 1e6 / len(lines):.0f} µs a line)"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--merchants", type=int, default=20)
    p.add_argument("--cards", type=int, default=300)
    p.add_argument("--redemptions", type=int, default=3000)
    p.add_argument("--database-url", default="")
    asyncio.run(main(p.parse_args()))
