"""Regulators' alert feed: cursor, long-poll (`wait`), acknowledge, resolve with a finding (线下核实)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.alerts import repository, service
from service.alerts.schemas import Alert, AlertPage, Finding
from service.http.common import Ctx, answer, caller, long_poll
from service.http.errors import responses
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])
Supervisor = caller("regulator", "operator")


@router.get("", response_model=AlertPage, responses=responses(401, 403, 422))
async def poll_alerts(
    ctx: Ctx,
    who: Supervisor,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="next_cursor of the last poll")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for a new alert")] = 0,
):
    """Alerts after the cursor, oldest first. With `wait`, holds the poll until an alert arrives or time runs out."""
    rows = await long_poll(ctx, repository.feed(after, limit), wait, service.signal)
    items = [service.alert_out(r) for r in rows]
    next_cursor = items[-1]["cursor"] if items else (str(after) if after is not None else None)
    return {"items": items, "next_cursor": next_cursor}


@router.post("/{alert_id}/acknowledge", response_model=Alert, responses=responses(401, 403, 404, 409))
async def acknowledge(alert_id: str, request: Request, ctx: Ctx, who: Supervisor):
    op = answer(200, service.move, alert_id, "acknowledged", ("open",))
    return await mutate(ctx, request, who, {}, op)


@router.post("/{alert_id}/resolve", response_model=Alert, responses=responses(400, 401, 403, 404, 409, 422))
async def resolve_alert(alert_id: str, body: Finding, request: Request, ctx: Ctx, who: Supervisor):
    """Resolve with the finding of the offline check (线下核实)."""
    op = answer(200, service.move, alert_id, "resolved", ("open", "acknowledged"), body.finding)
    return await mutate(ctx, request, who, body, op)
