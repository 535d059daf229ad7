"""A large ledger is verified in two halves on two cores: the split walk must find what one walk finds."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from api_tests.factories import OP, ledger_mix, new_checkpoint
from service.ledger_api.service import verify_ledger_sync


def _url(ctx) -> str:
    return ctx.engines.reader.url.render_as_string(hide_password=False)


async def _both(ctx) -> tuple[dict, dict]:
    url = _url(ctx)
    whole = await asyncio.to_thread(verify_ledger_sync, url, None, True, ctx.keys.public_key, 10**9)
    split = await asyncio.to_thread(verify_ledger_sync, url, None, True, ctx.keys.public_key, 2)
    return whole, split


async def test_a_split_walk_agrees_with_a_single_walk_and_names_the_same_tampered_entry(client, ctx):
    await ledger_mix(client)
    await new_checkpoint(client, {"headers": OP})
    await ledger_mix(client)
    whole, split = await _both(ctx)
    assert whole["ok"] and split["ok"], (whole, split)
    assert split["root_hash"] == whole["root_hash"] and split["chain_head"] == whole["chain_head"]
    assert split["size"] == whole["size"] and split["ledger_totals"] == whole["ledger_totals"]
    assert any("checkpoint at size" in c for c in split["checks"])
    n = split["size"]
    k = 1 << ((n - 1).bit_length() - 1)
    for seq in (k // 2, k + (n - k) // 2):  # one entry in each half
        async with ctx.engines.writer.begin() as conn:
            row = (await conn.execute(text("SELECT canonical FROM ledger_entries WHERE seq = :s"), {"s": seq})).first()
            await conn.execute(
                text("UPDATE ledger_entries SET canonical = :c WHERE seq = :s"),
                {"c": row[0].replace('"kind"', '"kind" ', 1), "s": seq},
            )
        whole, split = await _both(ctx)
        assert not whole["ok"] and not split["ok"]
        assert split["bad_seq"] == whole["bad_seq"] == seq, (seq, whole, split)
        async with ctx.engines.writer.begin() as conn:
            await conn.execute(text("UPDATE ledger_entries SET canonical = :c WHERE seq = :s"), {"c": row[0], "s": seq})
    whole, split = await _both(ctx)
    assert whole["ok"] and split["ok"]
