"""The webhook endpoints' and the event stream's answers are exactly their models: the OpenAPI document
types their times as date-time, their statuses as enums and forbids fields it does not name; every answer
of a story (register, list in pages, read, the delivery log after a failed attempt, rotate, delete, the
event feed) validates against its model, field for field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from api_tests.factories import buy_card, create_merchant, parse_time, publish_count, register_consumer
from api_tests.test_webhooks import deliver, register
from api_tests.webhook_receiver import Receiver
from service.event_log.schemas import EventPage
from service.webhooks.schemas import DeliveryPage, Endpoint, EndpointDeleted, EndpointPage, EndpointWithSecret

MODELS = (Endpoint, EndpointWithSecret, EndpointPage, EndpointDeleted, DeliveryPage, EventPage)


@pytest.fixture(scope="module")
def document(app):
    return app.openapi()


def component(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


def exactly(model: type[BaseModel], body: dict) -> BaseModel:
    """The answer read through its model (unknown fields refused) gives back the same JSON."""
    parsed = model.model_validate(body)
    assert parsed.model_dump(mode="json") == body
    return parsed


def test_the_document_types_times_statuses_and_pages(document):
    for model in MODELS:
        assert component(document, model.__name__)["additionalProperties"] is False, model.__name__
    endpoint = component(document, "Endpoint")["properties"]
    assert endpoint["created_at"]["format"] == "date-time"
    assert {"format": "date-time"} in [{"format": s.get("format")} for s in endpoint["failing_since"]["anyOf"]]
    assert endpoint["status"]["enum"] == ["enabled", "disabled"]
    delivery = component(document, "Delivery")["properties"]
    assert delivery["status"]["enum"] == ["pending", "delivered", "failed"]
    assert component(document, "Attempt")["properties"]["attempted_at"]["format"] == "date-time"
    assert component(document, "Event")["properties"]["created_at"]["format"] == "date-time"
    # Pages keep their names and say what they hold.
    for page, item in (("EndpointPage", "Endpoint"), ("DeliveryPage", "Delivery"), ("EventPage", "Event")):
        items = component(document, page)["properties"]["items"]["items"]
        assert items == {"$ref": f"#/components/schemas/{item}"}, page
    assert not [name for name in document["components"]["schemas"] if name.startswith("Page")]
    listed = document["paths"]["/v1/webhook-endpoints"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"] == {"$ref": "#/components/schemas/EndpointPage"}


async def test_every_answer_of_an_endpoints_life_is_exactly_its_model(client, ctx):
    gym = await create_merchant(client)
    li = await register_consumer(client)
    with Receiver(statuses=[503]) as receiver, Receiver() as other:
        first = exactly(EndpointWithSecret, await register(client, gym, receiver.url, types=["card.purchased"]))
        second = await register(client, gym, other.url, types=["*"])
        await buy_card(client, li, await publish_count(client, gym, 10_000, 10))
        await deliver(ctx)

    # Pages: one endpoint a page, a cursor while more follow, none on the last.
    r = await client.get("/v1/webhook-endpoints", params={"limit": 1}, headers=gym["headers"])
    assert r.status_code == 200, r.text
    one = exactly(EndpointPage, r.json())
    assert [e.id for e in one.items] == [min(first.id, second["id"])] and one.next_cursor == one.items[0].id
    r = await client.get("/v1/webhook-endpoints", params={"limit": 1, "after": one.next_cursor}, headers=gym["headers"])
    last = exactly(EndpointPage, r.json())
    assert [e.id for e in last.items] == [max(first.id, second["id"])] and last.next_cursor is None

    r = await client.get(f"/v1/webhook-endpoints/{first.id}", headers=gym["headers"])
    read = exactly(Endpoint, r.json())
    assert "secret" not in r.json() and read.status == "enabled" and read.failing_since is None
    assert parse_time(read.created_at).utcoffset() == timedelta(0)

    # The delivery log: a 503, then the 200 of the retry.
    r = await client.get(f"/v1/webhook-endpoints/{first.id}/deliveries", headers=gym["headers"])
    assert r.status_code == 200, r.text
    [delivery] = exactly(DeliveryPage, r.json()).items
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("delivered", 2, None)
    assert [a.status_code for a in delivery.attempt_log] == [503, 200]
    assert parse_time(delivery.attempt_log[0].attempted_at) <= parse_time(delivery.delivered_at or "")

    r = await client.post(f"/v1/webhook-endpoints/{first.id}/rotate-secret", headers=gym["headers"])
    rotated = exactly(EndpointWithSecret, r.json())
    assert rotated.secret != first.secret and rotated.previous_secret_expires_at is not None

    r = await client.get("/v1/events", params={"types": "card.purchased"}, headers=gym["headers"])
    events = exactly(EventPage, r.json())
    assert [e.id for e in events.items] == [delivery.event_id] and events.next_cursor == events.items[0].cursor

    r = await client.delete(f"/v1/webhook-endpoints/{first.id}", headers=gym["headers"])
    assert exactly(EndpointDeleted, r.json()) == EndpointDeleted(id=first.id, deleted=True)
    r = await client.get(f"/v1/webhook-endpoints/{first.id}/deliveries", headers=gym["headers"])
    assert r.status_code == 404, r.text
