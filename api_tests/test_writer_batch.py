"""One write batch, several operations: a failure stays with the operation that caused it.

The writer runs each operation of a batch in its own savepoint (service/db/writer.py). A database
refusal, whether the operation reads after the refused statement or not, fails that operation alone
with 409 `constraint_violation`; an operation that refuses after writing leaves nothing behind; the
other operations of the batch commit, and the writer goes on.
"""

from __future__ import annotations

import asyncio

import pytest

from service.http.errors import Conflict

from .factories import buy_card, create_merchant, publish, register_consumer


async def _card(client) -> str:
    merchant = await create_merchant(client)
    consumer = await register_consumer(client)
    product = await publish(client, merchant)
    return (await buy_card(client, consumer, product))["id"]


def _set_reference(card_id: str, value: str):
    async def op(tx):
        tx.conn.raw.run("UPDATE cards SET payment_reference = ? WHERE id = ?", (value, card_id))
        return value

    return op


def _break_held(card_id: str, read_after: bool):
    async def op(tx):
        raw = tx.conn.raw
        raw.run("INSERT INTO app_state (name, value) VALUES ('test-broken', 'written before the refusal')")
        raw.run("UPDATE cards SET held = escrow + 1 WHERE id = ?", (card_id,))  # CHECK held <= escrow
        if read_after:
            raw.one("SELECT held FROM cards WHERE id = ?", (card_id,))
        return "should not succeed"

    return op


def _refuse_after_writing(card_id: str):
    async def op(tx):
        tx.conn.raw.run("INSERT INTO app_state (name, value) VALUES ('test-refused', 'written before the refusal')")
        raise Conflict("refused after writing", "refused_for_the_test")

    return op


@pytest.mark.parametrize("read_after", [False, True])
async def test_a_refused_write_fails_its_operation_alone(client, ctx, read_after):
    card_id = await _card(client)
    raw_before = await _card_row(ctx, card_id)
    ops = [
        _set_reference(card_id, "first"),
        _break_held(card_id, read_after),
        _refuse_after_writing(card_id),
        _set_reference(card_id, "last"),
    ]
    results = await _one_batch(ctx, ops)

    assert results[0] == "first" and results[3] == "last"
    assert isinstance(results[1], Conflict) and results[1].code == "constraint_violation"
    assert isinstance(results[2], Conflict) and results[2].code == "refused_for_the_test"
    after = await _card_row(ctx, card_id)
    assert after["payment_reference"] == "last"
    assert after["leftovers"] == []  # what the failed operations wrote before failing is gone
    assert (after["held"], after["escrow"]) == (raw_before["held"], raw_before["escrow"])
    # The writer is still healthy for the next batch.
    assert await ctx.writer.run(_set_reference(card_id, "again")) == "again"


async def _card_row(ctx, card_id: str) -> dict:
    async def op(tx):
        raw = tx.conn.raw
        row = raw.one("SELECT held, escrow, payment_reference FROM cards WHERE id = ?", (card_id,))
        leftovers = raw.all("SELECT name FROM app_state WHERE name LIKE 'test-%'")
        return {"held": row[0], "escrow": row[1], "payment_reference": row[2], "leftovers": leftovers}

    return await ctx.writer.run(op)


async def test_a_refusal_after_writing_alone_leaves_nothing(client, ctx):
    """No database error in the batch: the refusal after a write alone must be rolled back."""
    card_id = await _card(client)
    results = await _one_batch(
        ctx, [_set_reference(card_id, "first"), _refuse_after_writing(card_id), _set_reference(card_id, "last")]
    )
    assert results[0] == "first" and results[2] == "last"
    assert isinstance(results[1], Conflict) and results[1].code == "refused_for_the_test"
    after = await _card_row(ctx, card_id)
    assert (after["payment_reference"], after["leftovers"]) == ("last", [])


async def _one_batch(ctx, ops) -> list:
    """Run `ops` in one write batch (the writer starts it once all of them wait in its queue)."""
    batches = ctx.writer.batches
    ctx.writer.gather(len(ops))
    results = await asyncio.gather(*(ctx.writer.run(op) for op in ops), return_exceptions=True)
    assert ctx.writer.batches - batches == 1  # all of `ops` together
    return results
