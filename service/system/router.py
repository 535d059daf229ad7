"""Service endpoints: liveness, and the test clock (only with ESCROW_ENV=test)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from service.core.clock import OFFSET_KEY, iso, utcnow
from service.health.service import reassess_all
from service.http.common import Ctx, caller
from service.http.errors import Unprocessable, responses
from service.ops.sweeper import sweep_once
from service.system import repository
from service.system.schemas import ClockMove, ClockMoved, Liveness, Pong

router = APIRouter(tags=["system"])
test_router = APIRouter(prefix="/v1/test", tags=["test"])


@router.get("/healthz", response_model=Liveness)
async def healthz():
    return {"status": "ok"}


@router.get("/v1/ping", response_model=Pong, responses=responses(401, 403))
async def ping(who: caller("operator", "merchant", "consumer", "regulator", "auditor")):
    """An authenticated no-op: the framework's ceiling in benchmarks."""
    return {"ok": True, "role": who.role}


@test_router.post("/clock", response_model=ClockMoved, responses=responses(400, 401, 403, 422))
async def move_clock(body: ClockMove, ctx: Ctx, who: caller("operator")):
    """Move the test clock forward (never back), then run the sweeper at the new time."""
    if body.now.tzinfo is None:
        raise Unprocessable("now must carry a time zone (e.g. 2026-12-01T00:00:00Z).", "invalid_field")
    current = ctx.clock.now()
    if body.now.year >= 9000:
        raise Unprocessable("now must be before the year 9000.", "invalid_field")
    if body.now < current:
        raise Unprocessable("The test clock only moves forward.", "clock_backwards")
    offset = body.now - utcnow()

    await ctx.writer.run(lambda tx: repository.put(tx.conn, OFFSET_KEY, str(offset // timedelta(microseconds=1))))
    async with ctx.engines.reader.connect() as conn:
        await ctx.clock.refresh(conn)
    swept = await sweep_once(ctx)
    swept["merchants_reassessed"] = await reassess_all(ctx.writer)  # windows and surges move with time
    return {"now": iso(ctx.clock.now()), "swept": swept}
