"""HTTP for complaints (投诉): consumers file, merchants respond, regulators resolve; each caller lists its own."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request

from service.complaints import repository, service
from service.complaints.schemas import Complaint, ComplaintCreate, ComplaintPage, ResolutionBody, ResponseBody
from service.http.common import After, Ctx, Limit, answer, caller, page, read
from service.http.errors import responses
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1/complaints", tags=["complaints"])
ERRORS = responses(400, 401, 403, 404, 409, 422)


@router.post("", status_code=201, response_model=Complaint, responses=responses(400, 401, 403, 404, 422))
async def file_complaint(body: ComplaintCreate, request: Request, ctx: Ctx, who: caller("consumer")):
    """File a complaint against a merchant (optionally about one of your cards); it must be answered in 24 hours."""
    op = answer(201, service.file, who.party_id, body.merchant_id, body.card_id, body.category, body.text)
    return await mutate(ctx, request, who, body, op)


@router.post("/{complaint_id}/response", response_model=Complaint, responses=ERRORS)
async def respond(complaint_id: str, body: ResponseBody, request: Request, ctx: Ctx, who: caller("merchant")):
    op = answer(200, service.respond, who.party_id, complaint_id, body.text)
    return await mutate(ctx, request, who, body, op)


@router.post("/{complaint_id}/resolution", response_model=Complaint, responses=ERRORS)
async def resolve_complaint(
    complaint_id: str, body: ResolutionBody, request: Request, ctx: Ctx, who: caller("regulator", "operator")
):
    op = answer(200, service.resolve, complaint_id, body.resolution, body.note)
    return await mutate(ctx, request, who, body, op)


@router.get("", response_model=ComplaintPage, responses=responses(401, 403, 422))
async def list_complaints(
    ctx: Ctx,
    who: caller("consumer", "merchant", "regulator", "operator"),
    merchant_id: str | None = Query(None, max_length=64),
    status: Literal["open", "responded", "resolved"] | None = None,
    limit: Limit = 50,
    after: After = None,
):
    """Complaints scoped to the caller: a consumer's own, a merchant's own, all for regulators."""
    consumer_id = who.party_id if who.role == "consumer" else None
    merchant_ids = [m for m in (who.party_id if who.role == "merchant" else None, merchant_id) if m]
    rows = await read(ctx, repository.page, consumer_id, merchant_ids, status, limit, after)
    now = ctx.clock.now()
    return page([service.complaint_out(r, now) for r in rows], limit)
