"""Request and response models of the webhook endpoints (SPEC §9)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from service.cards.schemas import Time
from service.http.common import Page, Strict

EventType = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z_]+\.[a-z_]+)$", max_length=40)]


class EndpointCreate(Strict):
    url: Annotated[str, StringConstraints(min_length=8, max_length=2000)]
    event_types: Annotated[
        list[EventType], Field(min_length=1, max_length=50, description='Event types to receive; ["*"] for every type')
    ]


class Endpoint(Strict):
    id: str
    url: str
    event_types: list[str]
    status: Literal["enabled", "disabled"] = Field(description="disabled: failing for days (enable it again)")
    created_at: Time
    failing_since: Time | None
    previous_secret_expires_at: Time | None = Field(description="Until then the previous secret signs too")


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="whsec_…: shown in this answer only (and in a replay of it)")


class EndpointPage(Page[Endpoint]):
    """A page of the caller's webhook endpoints."""


class EndpointDeleted(Strict):
    id: str
    deleted: bool


class Attempt(Strict):
    attempted_at: Time
    status_code: int | None
    duration_ms: int
    error: str | None


class Delivery(Strict):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"] = Field(description="failed: given up after the last retry")
    attempts: int
    next_attempt_at: Time | None
    last_status_code: int | None
    last_error: str | None
    created_at: Time
    delivered_at: Time | None
    attempt_log: list[Attempt]


class DeliveryPage(Page[Delivery]):
    """A page of an endpoint's delivery log."""
