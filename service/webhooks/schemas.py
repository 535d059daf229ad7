"""Request and response models of the webhook endpoints (SPEC §9)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from service.http.common import Strict

EventType = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z_]+\.[a-z_]+)$", max_length=40)]


class EndpointCreate(Strict):
    url: Annotated[str, StringConstraints(min_length=8, max_length=2000)]
    event_types: Annotated[
        list[EventType], Field(min_length=1, max_length=50, description='Event types to receive; ["*"] for every type')
    ]


class Endpoint(BaseModel):
    id: str
    url: str
    event_types: list[str]
    status: str = Field(description="enabled or disabled (failing for days)")
    created_at: str
    failing_since: str | None
    previous_secret_expires_at: str | None = Field(description="Until then the previous secret signs too")


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="whsec_…: shown in this answer only (and in a replay of it)")


class EndpointPage(BaseModel):
    items: list[Endpoint]
    next_cursor: str | None


class EndpointDeleted(BaseModel):
    id: str
    deleted: bool


class Attempt(BaseModel):
    attempted_at: str
    status_code: int | None
    duration_ms: int
    error: str | None


class Delivery(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: str = Field(description="pending, delivered or failed (gave up)")
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    delivered_at: str | None
    attempt_log: list[Attempt]


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None
