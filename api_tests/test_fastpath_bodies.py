"""The fast path keeps what the request models made of the small bodies they accepted (a counter sends
`{"uses":1}` all day): the same bytes read the same, each caller gets its own copy, refused bodies are
never kept, and over HTTP a repeated body and a refused one are answered as the routes answer them."""

from __future__ import annotations

from api_tests.factories import buy_card, create_merchant, publish_count, register_consumer
from service.redemptions import fastpath


def test_the_same_body_reads_the_same_and_each_caller_gets_a_copy():
    first = fastpath._payload("ask", b"application/json", b'{"uses":2}')
    assert first == {"amount": None, "uses": 2, "periods": None}
    first["uses"] = 99  # what one request does with its copy
    again = fastpath._payload("ask", b"application/json; charset=utf-8", b'{"uses":2}')
    assert again == {"amount": None, "uses": 2, "periods": None}
    assert again is not first


def test_refused_bodies_are_never_kept():
    for body in (b'{"uses":0}', b'{"uses":1,"amount":5}', b'{"uses":"1"}', b"{}"):
        assert fastpath._payload("ask", b"application/json", body) is None
        assert fastpath._payload("ask", b"application/json", body) is None
        assert ("ask", body) not in fastpath._VALIDATED
    assert fastpath._payload("ask", b"text/plain", b'{"uses":1}') is None  # the content type is judged first


async def test_a_repeated_body_and_a_refused_one_over_http(client):
    gym = await create_merchant(client)
    product = await publish_count(client, gym, price=10_000, uses=10)
    li = await register_consumer(client)
    card = await buy_card(client, li, product)
    headers = {**gym["headers"], "Content-Type": "application/json"}

    async def ask(body: bytes):
        return await client.post(f"/v1/cards/{card['id']}/redemptions", content=body, headers=headers)

    holds = []
    for _ in range(3):
        r = await ask(b'{"uses":1}')
        assert r.status_code == 201, r.text
        holds.append(r.json()["id"])
    assert len(set(holds)) == 3
    for _ in range(2):
        r = await ask(b'{"uses":0}')
        assert r.status_code == 422, r.text
