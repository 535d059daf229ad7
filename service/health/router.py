"""Public health codes and directory, the operator's policy, and random inspection draws (双随机、一公开)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Query, Request

from service.core.clock import iso
from service.health import repository
from service.health.schemas import DirectoryPage, DrawRequest, HealthCode, InspectionDraw, RiskPolicy
from service.health.service import current_policy, draw, health_out, policy_cache, publish_policy, reassess_all
from service.http.common import Ctx, answer, caller, read
from service.http.errors import Unprocessable, responses
from service.security.idempotency import mutate

router = APIRouter(tags=["health"])
Supervisor = caller("regulator", "operator")


@router.get("/v1/merchants/{merchant_id}/health", response_model=HealthCode, responses=responses(404))
async def merchant_health(merchant_id: str, ctx: Ctx):
    """A merchant's prepaid health code (预付健康码): code, since, warning, indicators, reasons, policy version."""
    row = await read(ctx, repository.code_of, merchant_id)
    return health_out(row, row.delisted)


@router.get("/v1/merchants", response_model=DirectoryPage, responses=responses(422))
async def directory(
    ctx: Ctx,
    code: Literal["green", "yellow", "red"] | None = None,
    category: str | None = Query(None, max_length=40),
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[int | None, Query(ge=0, le=10**9, description="next_cursor of the previous page")] = None,
):
    """The public directory: green merchants first (流量支持、优先推介), then yellow, then red."""
    rows = await read(ctx, repository.directory, code, category, after or 0, limit + 1)
    items = [
        {
            "id": r.id,
            "name": r.name,
            "category": r.category,
            "code": r.code,
            "since": iso(r.since),
            "status": "delisted" if r.delisted else r.status,
            "selling": r.status == "active" and not r.delisted,
        }
        for r in rows[:limit]
    ]
    return {"items": items, "next_cursor": str((after or 0) + limit) if len(rows) > limit else None}


@router.get("/v1/risk/policy", response_model=RiskPolicy, responses=responses(401, 403))
async def get_policy(ctx: Ctx, who: Supervisor):
    return (await read(ctx, current_policy)).to_dict()


@router.put("/v1/risk/policy", response_model=RiskPolicy, responses=responses(400, 401, 403, 422))
async def put_policy(request: Request, ctx: Ctx, who: caller("operator"), body: dict[str, Any] = Body(...)):
    """Publish a new policy version: omitted fields keep their current values; every code is re-assessed."""
    response = await mutate(ctx, request, who, body, answer(200, publish_policy, body))
    policy_cache.forget()
    await reassess_all(ctx.writer)
    return response


@router.post(
    "/v1/inspections/draws", status_code=201, response_model=InspectionDraw, responses=responses(400, 401, 403, 422)
)
async def draw_inspections(body: DrawRequest, request: Request, ctx: Ctx, who: Supervisor):
    """Draw merchants to inspect (worse codes at higher ratios) and assign random inspectors.

    The answer publishes the seed and the merchant list it drew from, so anyone can repeat the draw
    with `risk.draw_inspections` and get the same list."""
    if not body.inspectors or len(body.inspectors) > 1000:
        raise Unprocessable("Give between 1 and 1000 inspectors.", "invalid_inspectors")
    seed = body.seed or secrets.token_hex(16)
    return await mutate(ctx, request, who, body, answer(201, draw, list(body.inspectors), seed))


@router.get("/v1/inspections/draws/{draw_id}", response_model=InspectionDraw, responses=responses(404))
async def get_draw(draw_id: str, ctx: Ctx):
    row = await read(ctx, repository.get_draw, draw_id)
    return {"id": row.id, **orjson.loads(row.body)}
