"""Response models of the event stream (SPEC §9)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Event(BaseModel):
    id: str = Field(description="evt_…; also the webhook-id of its deliveries")
    cursor: str = Field(description="Pass as `after` to read on from this event")
    type: str
    created_at: str
    ledger_seq: int | None = Field(description="The ledger entry of the change, if it has one")
    data: dict[str, Any] = Field(description="The object as the API shows it")


class EventPage(BaseModel):
    items: list[Event]
    next_cursor: str | None
