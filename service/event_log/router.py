"""`GET /v1/events`: the caller's events after a cursor, with long-poll (`wait`) like the alert feed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.event_log import repository
from service.event_log.event_types import EVENT_TYPES
from service.event_log.schemas import EventPage
from service.event_log.service import event_out, new_events
from service.http.common import long_poll
from service.http.context import AppContext, get_ctx
from service.http.errors import Unprocessable, responses
from service.security.auth import Principal, require

router = APIRouter(prefix="/v1/events", tags=["events"])


def parse_types(types: str | None) -> list[str] | None:
    if not types:
        return None
    wanted = [t.strip() for t in types.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(EVENT_TYPES))
    if unknown:
        raise Unprocessable(f"Unknown event types: {', '.join(unknown)[:200]}.", "unknown_event_type")
    return wanted


@router.get("", response_model=EventPage, responses=responses(401, 403, 422))
async def list_events(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("merchant", "consumer", "regulator", "auditor", "operator")),
    after: Annotated[int | None, Query(ge=0, le=2**62, description="next_cursor of the last poll")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for a new event")] = 0,
    types: Annotated[str | None, Query(max_length=2000, description="comma-separated event types")] = None,
):
    """The events the caller may see after the cursor, oldest first (SPEC §9). With `wait`, holds the
    poll until an event arrives or the time runs out."""
    stmt = repository.feed(who.role, who.party_id, after, limit, parse_types(types))
    rows = await long_poll(ctx, stmt, wait, new_events)
    items = [event_out(r) for r in rows]
    next_cursor = items[-1]["cursor"] if items else (str(after) if after is not None else None)
    return {"items": items, "next_cursor": next_cursor}
