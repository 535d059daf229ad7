"""Regulators' alert feed: cursor, long-poll (`wait`), acknowledge, resolve with a finding (线下核实)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select, update

from service.alerts.schemas import Alert, AlertPage, Finding
from service.auth import Principal, require
from service.clock import iso
from service.common import long_poll
from service.context import AppContext, get_ctx
from service.errors import Conflict, NotFound, responses
from service.health.service import alert_listeners, alerts_t
from service.idempotency import mutate

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


class _Signal:
    """Wakes long-polls on this replica as soon as a batch with new alerts commits."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


signal = _Signal()
alert_listeners.append(signal)


def alert_out(a) -> dict:
    return {
        "id": a.id,
        "cursor": str(a.seq),
        "merchant_id": a.merchant_id,
        "kind": a.kind,
        "from_code": a.from_code,
        "to_code": a.to_code,
        "reasons": orjson.loads(a.reasons),
        "status": a.status,
        "finding": a.finding,
        "created_at": iso(a.created_at),
        "acknowledged_at": iso(a.acknowledged_at),
        "resolved_at": iso(a.resolved_at),
        "ledger_seq": a.ledger_seq,
    }


@router.get("", response_model=AlertPage, responses=responses(401, 403, 422))
async def poll_alerts(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("regulator", "operator")),
    after: Annotated[int | None, Query(ge=0, le=2**62, description="next_cursor of the last poll")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for a new alert")] = 0,
):
    """Alerts after the cursor, oldest first. With `wait`, holds the poll until an alert arrives or time runs out."""
    stmt = select(alerts_t).order_by(alerts_t.c.seq).limit(limit)
    if after is not None:
        stmt = stmt.where(alerts_t.c.seq > after)
    rows = await long_poll(ctx, stmt, wait, signal)
    items = [alert_out(r) for r in rows]
    next_cursor = items[-1]["cursor"] if items else (str(after) if after is not None else None)
    return {"items": items, "next_cursor": next_cursor}


async def _transition(ctx, request, who, alert_id: str, body, to: str, allowed: tuple[str, ...], **values):
    async def op(tx):
        a = (await tx.conn.execute(select(alerts_t).where(alerts_t.c.id == alert_id))).first()
        if a is None:
            raise NotFound("No such alert.", "alert_not_found")
        if a.status not in allowed:
            raise Conflict(f"The alert is already {a.status}.", "alert_state_conflict")
        stamp = {"acknowledged": "acknowledged_at", "resolved": "resolved_at"}[to]
        extra = {stamp: tx.now}
        if to == "resolved" and a.acknowledged_at is None:
            extra["acknowledged_at"] = tx.now
        await tx.conn.execute(update(alerts_t).where(alerts_t.c.id == alert_id).values(status=to, **extra, **values))
        return 200, alert_out((await tx.conn.execute(select(alerts_t).where(alerts_t.c.id == alert_id))).first())

    return await mutate(ctx, request, who, body, op)


@router.post("/{alert_id}/acknowledge", response_model=Alert, responses=responses(401, 403, 404, 409))
async def acknowledge(
    alert_id: str,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("regulator", "operator")),
):
    return await _transition(ctx, request, who, alert_id, {}, "acknowledged", ("open",))


@router.post("/{alert_id}/resolve", response_model=Alert, responses=responses(400, 401, 403, 404, 409, 422))
async def resolve_alert(
    alert_id: str,
    body: Finding,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("regulator", "operator")),
):
    """Resolve with the finding of the offline check (线下核实)."""
    return await _transition(
        ctx, request, who, alert_id, body, "resolved", ("open", "acknowledged"), finding=body.finding
    )
