"""Response models of the event stream (SPEC §9)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from service.cards.schemas import Time
from service.http.common import Page, Strict


class Event(Strict):
    id: str = Field(description="evt_…; also the webhook-id of its deliveries")
    cursor: str = Field(description="Pass as `after` to read on from this event")
    type: str
    created_at: Time
    ledger_seq: int | None = Field(description="The ledger entry of the change, if it has one")
    data: dict[str, Any] = Field(description="The object as the API shows it")


class EventPage(Page[Event]):
    """The caller's events after the cursor, oldest first."""

    next_cursor: str | None = Field(
        description="Pass as `after` in the next poll: the last event's cursor, or the one given"
    )
