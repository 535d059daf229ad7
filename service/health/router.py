"""Public health codes and directory, the operator's policy, and random inspection draws (双随机、一公开)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from sqlalchemy import case, insert, select

from risk import Policy, PolicyError, draw_inspections
from service.auth import Principal, require
from service.clock import iso
from service.context import AppContext, get_ctx
from service.db.models import InspectionDraw as DrawRow
from service.db.models import Merchant
from service.errors import NotFound, Unprocessable, responses
from service.health.schemas import DirectoryPage, DrawRequest, HealthCode, InspectionDraw, RiskPolicy
from service.health.service import health_out, health_t, policies_t, policy_cache, reassess_all
from service.idempotency import mutate
from service.ids import new_id

router = APIRouter(tags=["health"])
merchants_t = Merchant.__table__
draws_t = DrawRow.__table__
CODE_RANK = case((health_t.c.code == "green", 0), (health_t.c.code == "yellow", 1), else_=2)


@router.get("/v1/merchants/{merchant_id}/health", response_model=HealthCode, responses=responses(404))
async def merchant_health(merchant_id: str, ctx: AppContext = Depends(get_ctx)):
    """A merchant's prepaid health code (预付健康码): code, since, warning, indicators, reasons, policy version."""
    async with ctx.engines.reader.connect() as conn:
        row = (
            await conn.execute(
                select(health_t, merchants_t.c.delisted)
                .join(merchants_t, merchants_t.c.id == health_t.c.merchant_id)
                .where(health_t.c.merchant_id == merchant_id)
            )
        ).first()
    if row is None:
        raise NotFound("No such merchant.", "merchant_not_found")
    return health_out(row, row.delisted)


@router.get("/v1/merchants", response_model=DirectoryPage, responses=responses(422))
async def directory(
    ctx: AppContext = Depends(get_ctx),
    code: Literal["green", "yellow", "red"] | None = None,
    category: str | None = Query(None, max_length=40),
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[int | None, Query(ge=0, le=10**9, description="next_cursor of the previous page")] = None,
):
    """The public directory: green merchants first (流量支持、优先推介), then yellow, then red."""
    stmt = (
        select(
            merchants_t.c.id,
            merchants_t.c.name,
            merchants_t.c.category,
            merchants_t.c.status,
            merchants_t.c.delisted,
            health_t.c.code,
            health_t.c.since,
        )
        .join(health_t, health_t.c.merchant_id == merchants_t.c.id)
        .where(merchants_t.c.status.in_(("active", "closing")))
        .order_by(CODE_RANK, merchants_t.c.id)
        .offset(after or 0)
        .limit(limit + 1)
    )
    if code:
        stmt = stmt.where(health_t.c.code == code)
    if category:
        stmt = stmt.where(merchants_t.c.category == category)
    async with ctx.engines.reader.connect() as conn:
        rows = (await conn.execute(stmt)).all()
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


async def _current_policy(conn) -> Policy:
    policy_cache.forget()
    return await policy_cache.get(conn)


@router.get("/v1/risk/policy", response_model=RiskPolicy, responses=responses(401, 403))
async def get_policy(ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("regulator", "operator"))):
    async with ctx.engines.reader.connect() as conn:
        return (await _current_policy(conn)).to_dict()


@router.put("/v1/risk/policy", response_model=RiskPolicy, responses=responses(400, 401, 403, 422))
async def put_policy(
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("operator")),
    body: dict[str, Any] = Body(...),
):
    """Publish a new policy version: omitted fields keep their current values; every code is re-assessed."""

    async def op(tx):
        current = await _current_policy(tx.conn)
        changes = {k: v for k, v in body.items() if k != "version"}
        try:
            new = Policy.from_dict({**changes, "version": current.version + 1}, base=current)
        except PolicyError as exc:
            raise Unprocessable(str(exc), "invalid_policy") from exc
        await tx.conn.execute(
            insert(policies_t).values(version=new.version, body=orjson.dumps(new.to_dict()).decode(), created_at=tx.now)
        )
        return 200, new.to_dict()

    response = await mutate(ctx, request, who, body, op)
    policy_cache.forget()
    await reassess_all(ctx.writer)
    return response


def _draw_out(d_id: str, body: dict) -> dict:
    return {"id": d_id, **body}


@router.post(
    "/v1/inspections/draws", status_code=201, response_model=InspectionDraw, responses=responses(400, 401, 403, 422)
)
async def draw(
    body: DrawRequest,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("regulator", "operator")),
):
    """Draw merchants to inspect (worse codes at higher ratios) and assign random inspectors.

    The answer publishes the seed and the merchant list it drew from, so anyone can repeat the draw
    with `risk.draw_inspections` and get the same list."""
    if not body.inspectors or len(body.inspectors) > 1000:
        raise Unprocessable("Give between 1 and 1000 inspectors.", "invalid_inspectors")
    seed = body.seed or secrets.token_hex(16)

    async def op(tx):
        policy = await _current_policy(tx.conn)
        rows = (
            await tx.conn.execute(
                select(health_t.c.merchant_id, health_t.c.code)
                .join(merchants_t, merchants_t.c.id == health_t.c.merchant_id)
                .where(merchants_t.c.status.in_(("active", "closing")))
                .order_by(health_t.c.merchant_id)
            )
        ).all()
        population = [(r.merchant_id, r.code) for r in rows]
        try:
            pairs = draw_inspections(population, list(body.inspectors), policy, seed)
        except ValueError as exc:
            raise Unprocessable(str(exc), "invalid_draw") from exc
        d_id = new_id("drw")
        out = {
            "seed": seed,
            "policy_version": policy.version,
            "drawn_at": iso(tx.now),
            "ratios_bp": policy.inspection_ratios.to_dict(),
            "inspectors": list(body.inspectors),
            "population": [{"merchant_id": m, "code": c} for m, c in population],
            "inspections": [{"merchant_id": m, "inspector": i} for m, i in pairs],
        }
        await tx.conn.execute(
            insert(draws_t).values(id=d_id, seed=seed, body=orjson.dumps(out).decode(), created_at=tx.now)
        )
        tx.append("inspection_draw", draw_id=d_id, seed=seed, drawn=len(pairs))
        return 201, _draw_out(d_id, out)

    return await mutate(ctx, request, who, body, op)


@router.get("/v1/inspections/draws/{draw_id}", response_model=InspectionDraw, responses=responses(404))
async def get_draw(draw_id: str, ctx: AppContext = Depends(get_ctx)):
    async with ctx.engines.reader.connect() as conn:
        row = (await conn.execute(select(draws_t).where(draws_t.c.id == draw_id))).first()
    if row is None:
        raise NotFound("No such draw.", "draw_not_found")
    return _draw_out(row.id, orjson.loads(row.body))
