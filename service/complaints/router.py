from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from service.auth import Principal, require
from service.common import After, Limit, page
from service.complaints import service
from service.complaints.schemas import Complaint, ComplaintCreate, ComplaintPage, ResolutionBody, ResponseBody
from service.context import AppContext, get_ctx
from service.errors import responses
from service.idempotency import mutate

router = APIRouter(prefix="/v1/complaints", tags=["complaints"])


@router.post("", status_code=201, response_model=Complaint, responses=responses(400, 401, 403, 404, 422))
async def file_complaint(
    body: ComplaintCreate,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("consumer")),
):
    """File a complaint against a merchant (optionally about one of your cards); it must be answered in 24 hours."""

    async def op(tx):
        return 201, await service.file(tx, who.party_id, body.merchant_id, body.card_id, body.category, body.text)

    return await mutate(ctx, request, who, body, op)


@router.post("/{complaint_id}/response", response_model=Complaint, responses=responses(400, 401, 403, 404, 409, 422))
async def respond(
    complaint_id: str,
    body: ResponseBody,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("merchant")),
):
    async def op(tx):
        return 200, await service.respond(tx, who.party_id, complaint_id, body.text)

    return await mutate(ctx, request, who, body, op)


@router.post("/{complaint_id}/resolution", response_model=Complaint, responses=responses(400, 401, 403, 404, 409, 422))
async def resolve_complaint(
    complaint_id: str,
    body: ResolutionBody,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("regulator", "operator")),
):
    async def op(tx):
        return 200, await service.resolve(tx, complaint_id, body.resolution, body.note)

    return await mutate(ctx, request, who, body, op)


@router.get("", response_model=ComplaintPage, responses=responses(401, 403, 422))
async def list_complaints(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("consumer", "merchant", "regulator", "operator")),
    merchant_id: str | None = Query(None, max_length=64),
    status: Literal["open", "responded", "resolved"] | None = None,
    limit: Limit = 50,
    after: After = None,
):
    """Complaints scoped to the caller: a consumer's own, a merchant's own, all for regulators."""
    t = service.complaints_t
    stmt = select(t).order_by(t.c.id).limit(limit + 1)
    if who.role == "consumer":
        stmt = stmt.where(t.c.consumer_id == who.party_id)
    elif who.role == "merchant":
        stmt = stmt.where(t.c.merchant_id == who.party_id)
    if merchant_id:
        stmt = stmt.where(t.c.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(t.c.status == status)
    if after:
        stmt = stmt.where(t.c.id > after)
    async with ctx.engines.reader.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    now = ctx.clock.now()
    return page([service.complaint_out(r, now) for r in rows], limit)
