"""One rule voids a pending hold (`redemptions.service.void_hold`), whoever calls it: a merchant's cancel,
a hold's expiry (the sweeper) and the voids a refund makes first leave the same card, redemption and
ledger behind."""

from __future__ import annotations

import orjson
import pytest

from api_tests.factories import (
    answer,
    ask,
    buy_card,
    create_merchant,
    get_card,
    ledger_entries,
    move_clock_past,
    publish_stored_value,
    refund,
    register_consumer,
)
from service.http.errors import Conflict
from service.redemptions import repository as redemptions_repo
from service.redemptions.service import void_hold

ASKS = (24_000, 12_000)  # face fen: holds of 20_000 and 10_000 on a card of 100_000 for 120_000 face


async def _card_with_two_pending_asks(client, gym, product):
    li = await register_consumer(client)
    card = await buy_card(client, li, product)
    pending = [await ask(client, gym, card, amount=a) for a in ASKS]
    return li, card, pending


def _voids_of(entries: list[dict], card_id: str) -> list[dict]:
    bodies = [orjson.loads(e["canonical"]) for e in entries]
    return [b for b in bodies if b["kind"] == "void" and b["card_id"] == card_id]


def _same_part(void: dict) -> tuple:
    return void["units"], void["amount"], void["held_delta"]


async def test_a_cancel_an_expiry_and_a_refund_void_a_hold_alike(client):
    gym = await create_merchant(client)
    product = await publish_stored_value(client, gym, price=100_000, face_value=120_000)
    li_a, card_a, asks_a = await _card_with_two_pending_asks(client, gym, product)
    li_b, card_b, asks_b = await _card_with_two_pending_asks(client, gym, product)
    li_c, card_c, asks_c = await _card_with_two_pending_asks(client, gym, product)

    for p in asks_a:  # the merchant cancels
        assert (await answer(client, gym, p, "cancel"))["status"] == "cancelled"
    refunded_b = await refund(client, li_b, card_b)  # the refund voids both holds first
    moved = await move_clock_past(client, asks_c[-1]["expires_at"], seconds=1)
    assert moved["swept"]["holds_expired"] == 2  # the sweeper (run by the clock's move) expires them
    after_void_a, after_void_c = await get_card(client, li_a, card_a), await get_card(client, li_c, card_c)
    assert after_void_a["balance"] == after_void_c["balance"]
    assert (after_void_a["balance"]["held"], after_void_a["balance"]["units_held"]) == (0, 0)
    refunded_a, refunded_c = await refund(client, li_a, card_a), await refund(client, li_c, card_c)

    entries = await ledger_entries(client, limit=100)
    voids = {c["id"]: _voids_of(entries, c["id"]) for c in (card_a, card_b, card_c)}
    # Each hold's void gives back what it held, the second one after the first: the same for every caller.
    assert [_same_part(v) for v in voids[card_a["id"]]] == [(24_000, 20_000, -20_000), (12_000, 10_000, -10_000)]
    assert [_same_part(v) for v in voids[card_b["id"]]] == [_same_part(v) for v in voids[card_a["id"]]]
    assert [_same_part(v) for v in voids[card_c["id"]]] == [_same_part(v) for v in voids[card_a["id"]]]
    assert [v["reason"] for v in voids[card_a["id"]]] == ["cancelled", "cancelled"]
    assert [v["reason"] for v in voids[card_b["id"]]] == [refunded_b["rule"]] * 2
    assert [v["reason"] for v in voids[card_c["id"]]] == ["expired", "expired"]

    by_seq = {orjson.loads(e["canonical"])["seq"]: orjson.loads(e["canonical"]) for e in entries}
    for li, pending, status in ((li_a, asks_a, "cancelled"), (li_b, asks_b, "cancelled"), (li_c, asks_c, "expired")):
        for p in pending:
            r = (await client.get(f"/v1/redemptions/{p['id']}", headers=li["headers"])).json()
            assert (r["status"], r["release_amount"], r["hold_amount"]) == (status, None, p["hold_amount"])
            assert r["answered_at"] is not None
            void = by_seq[r["ledger_seq"]]  # the redemption points at its own void entry
            assert (void["kind"], void["redemption_id"]) == ("void", p["id"])

    # And the refunds that follow see the same card: all of it back, in cooling-off.
    assert refunded_a["amount"] == refunded_b["amount"] == refunded_c["amount"] == 100_000
    balances = [
        (await get_card(client, li, c))["balance"] for li, c in ((li_a, card_a), (li_b, card_b), (li_c, card_c))
    ]
    assert balances[0] == balances[1] == balances[2]
    assert (balances[0]["escrow"], balances[0]["held"], balances[0]["refunded"]) == (0, 0, 100_000)


@pytest.mark.parametrize("answer_first", ["reject", "confirm"])
async def test_a_hold_that_is_no_longer_pending_cannot_be_voided(client, ctx, answer_first):
    gym = await create_merchant(client)
    product = await publish_stored_value(client, gym, price=100_000, face_value=120_000)
    li, card, (first, second) = await _card_with_two_pending_asks(client, gym, product)
    await answer(client, li, first, answer_first)
    before = await get_card(client, li, card)

    async def void_again(tx):
        r, card_row = redemptions_repo.with_card(tx.conn.raw, first["id"])
        return await void_hold(tx, card_row, r, "cancelled")

    with pytest.raises(Conflict) as refused:
        await ctx.writer.run(void_again)
    assert refused.value.code == "redemption_not_pending"

    async def void_on_another_card(tx):  # the second hold, against the first card's row of another card
        r, card_row = redemptions_repo.with_card(tx.conn.raw, second["id"])
        return await void_hold(tx, card_row._replace(id="card_elsewhere"), r, "cancelled")

    with pytest.raises(Conflict):
        await ctx.writer.run(void_on_another_card)
    assert await get_card(client, li, card) == before
