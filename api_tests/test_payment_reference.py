"""A payment reference funds one card only (SPEC §12; issue 12 finding 6): the second purchase with the
same method and reference is 409 `payment_reference_used`, however the requests interleave; an
idempotent replay of the first purchase still gets the first answer."""

from __future__ import annotations

import asyncio

from sqlalchemy import insert, select

from api_tests.factories import assert_error, buy_card, create_merchant, publish_stored_value, register_consumer
from api_tests.test_idempotency import my_cards
from service.db.models import Card


def _body(product: dict, reference: str, method: str = "wechat_pay") -> dict:
    return {"product_id": product["id"], "payment": {"method": method, "reference": reference}}


async def test_the_second_purchase_with_one_payment_reference_is_refused(client):
    gym = await create_merchant(client)
    salon = await create_merchant(client, "Jade Salon 玉美发", "beauty")
    gym_card = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    salon_card = await publish_stored_value(client, salon, price=20_000, face_value=25_000)
    li, han = await register_consumer(client), await register_consumer(client, "Han Meimei 韩梅梅")
    first = await buy_card(client, li, gym_card, reference="wx-4200001234")

    # Again by the same consumer, by another one, for another merchant's card: each a 409, nothing bought.
    for who, product in ((li, gym_card), (han, gym_card), (han, salon_card)):
        r = await client.post("/v1/cards", json=_body(product, "wx-4200001234"), headers=who["headers"])
        error = assert_error(r, 409, "payment_reference_used")
        assert "reference" in error["message"]
    assert [c["id"] for c in await my_cards(client, li)] == [first["id"]]
    assert await my_cards(client, han) == []

    # The pair is what is unique: the same reference string from another payment method is another payment.
    await buy_card_with(client, han, gym_card, "wx-4200001234", "alipay")


async def buy_card_with(client, who, product, reference, method):
    r = await client.post("/v1/cards", json=_body(product, reference, method), headers=who["headers"])
    assert r.status_code == 201, r.text
    return r.json()


async def test_an_idempotent_replay_of_the_purchase_still_gets_the_first_answer(client):
    gym = await create_merchant(client)
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    li = await register_consumer(client)
    headers = {**li["headers"], "Idempotency-Key": "buy-once"}
    first = await client.post("/v1/cards", json=_body(product, "wx-replay-1"), headers=headers)
    again = await client.post("/v1/cards", json=_body(product, "wx-replay-1"), headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    other_key = await client.post(
        "/v1/cards", json=_body(product, "wx-replay-1"), headers={**li["headers"], "Idempotency-Key": "buy-twice"}
    )
    assert_error(other_key, 409, "payment_reference_used")
    assert len(await my_cards(client, li)) == 1


async def test_concurrent_purchases_with_one_reference_buy_exactly_one_card(client):
    gym = await create_merchant(client)
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    buyers = [await register_consumer(client, f"Buyer {i}") for i in range(12)]
    answers = await asyncio.gather(
        *[client.post("/v1/cards", json=_body(product, "wx-race-7"), headers=b["headers"]) for b in buyers]
    )
    assert sorted(r.status_code for r in answers) == [201] + [409] * 11, [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"payment_reference_used"}
    owned = [len(await my_cards(client, b)) for b in buyers]
    assert sorted(owned) == [0] * 11 + [1]


async def test_the_database_refuses_a_second_card_on_one_reference_too(client, ctx):
    """The backstop for replicas writing at once: the unique index, whatever the service checks."""
    gym = await create_merchant(client)
    product = await publish_stored_value(client, gym, price=10_000, face_value=12_000)
    li = await register_consumer(client)
    card = await buy_card(client, li, product, reference="up-backstop")
    cards = Card.__table__
    async with ctx.engines.writer.connect() as conn:
        row = dict((await conn.execute(select(cards).where(cards.c.id == card["id"]))).mappings().one())
    row.update(id="card_forged_second_use")
    import sqlalchemy.exc

    try:
        async with ctx.engines.writer.begin() as conn:
            await conn.execute(insert(cards).values(**row))
    except sqlalchemy.exc.IntegrityError as exc:
        assert "payment" in str(exc).lower() or "unique" in str(exc).lower()
    else:
        raise AssertionError("a second card on one payment reference was stored")
