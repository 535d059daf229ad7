"""The sweeper prunes what would otherwise grow forever (issue 12, finding 10): idempotency keys once
their 24-hour promise is over (kept longer if configured, never shorter) and rate-limit windows long
over, oldest first and in bounded chunks. Time moves with the test clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, insert, select

from api_tests.factories import create_merchant, move_clock_to, parse_time, publish_stored_value, register_consumer
from service.core.settings import Settings
from service.db.models import IdempotencyKey, RateLimit
from service.ops.sweeper import prune_idempotency, sweep_once

keys_t, limits_t = IdempotencyKey.__table__, RateLimit.__table__


async def _count(ctx, table, **where) -> int:
    async with ctx.engines.writer.connect() as conn:
        stmt = select(func.count()).select_from(table)
        for k, v in where.items():
            stmt = stmt.where(table.c[k] == v)
        return (await conn.execute(stmt)).scalar()


async def _buy(client, consumer, product, key: str):
    return await client.post(
        "/v1/cards",
        headers={**consumer["headers"], "Idempotency-Key": key},
        json={"product_id": product["id"], "payment": {"method": "alipay", "reference": f"ali-prune-{key}"}},
    )


async def test_idempotency_keys_are_kept_24_hours_then_pruned(client, ctx):
    gym = await create_merchant(client)
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    li = await register_consumer(client)
    first = await _buy(client, li, product, "k-1")
    assert first.status_code == 201, first.text
    bought = parse_time(first.json()["purchased_at"])
    assert await _count(ctx, keys_t, key="k-1") == 1

    await move_clock_to(client, bought + timedelta(hours=23, minutes=59))  # the clock move runs a sweep
    await sweep_once(ctx)
    assert await _count(ctx, keys_t, key="k-1") == 1
    again = await _buy(client, li, product, "k-1")
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"

    await move_clock_to(client, bought + timedelta(hours=24, minutes=1))
    swept = await sweep_once(ctx)
    assert await _count(ctx, keys_t, key="k-1") == 0, swept


async def test_a_longer_keep_is_honoured_and_a_shorter_one_refused(client, ctx, monkeypatch):
    with pytest.raises(ValidationError):
        Settings(idempotency_keep_hours=23)
    monkeypatch.setattr(ctx.settings, "idempotency_keep_hours", 48)
    gym = await create_merchant(client)
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    li = await register_consumer(client)
    first = await _buy(client, li, product, "k-48")
    bought = parse_time(first.json()["purchased_at"])
    await move_clock_to(client, bought + timedelta(hours=30))
    await sweep_once(ctx)
    assert await _count(ctx, keys_t, key="k-48") == 1
    await move_clock_to(client, bought + timedelta(hours=48, minutes=1))
    await sweep_once(ctx)
    assert await _count(ctx, keys_t, key="k-48") == 0


async def test_pruning_goes_in_bounded_chunks_oldest_first(client, ctx):
    now = ctx.clock.now()
    old = [
        {
            "caller": f"con_{i:05d}",
            "key": "bulk",
            "request_hash": "0" * 64,
            "status_code": 201,
            "response_body": "{}",
            "created_at": now - timedelta(days=3, minutes=i),
        }
        for i in range(2_500)
    ]
    fresh = [
        {
            "caller": "con_fresh",
            "key": "bulk",
            "request_hash": "0" * 64,
            "status_code": 201,
            "response_body": "{}",
            "created_at": now - timedelta(hours=1),
        }
    ]
    limits = [
        {"bucket": f"reg:10.0.{i // 256}.{i % 256}", "count": 3, "window_start": now - timedelta(days=2, minutes=i)}
        for i in range(1_200)
    ] + [{"bucket": "reg:10.9.9.9", "count": 1, "window_start": now}]
    async with ctx.engines.writer.begin() as conn:
        await conn.execute(insert(keys_t), old + fresh)
        await conn.execute(insert(limits_t), limits)

    step = prune_idempotency(ctx)
    assert await ctx.writer.run(lambda tx: step(tx, 1_000)) == 1_000  # one chunk: at most its limit
    async with ctx.engines.writer.connect() as conn:
        oldest_left = (await conn.execute(select(func.min(keys_t.c.created_at)).where(keys_t.c.key == "bulk"))).scalar()
    assert oldest_left.replace(tzinfo=None) == (now - timedelta(days=3, minutes=1_499)).replace(tzinfo=None)

    totals = await sweep_once(ctx)
    assert totals["idempotency_keys_pruned"] == 1_500 and totals["rate_limits_pruned"] == 1_200, totals
    assert await _count(ctx, keys_t, key="bulk") == 1  # the fresh one stays
    assert await _count(ctx, limits_t, bucket="reg:10.9.9.9") == 1  # the current window stays
    assert (await sweep_once(ctx))["idempotency_keys_pruned"] == 0
