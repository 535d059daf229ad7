"""HTTP for credit recommendation (信用推介): lenders, merchants' consent, the reports lenders read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import StringConstraints

from service.auth import Principal, require
from service.common import After
from service.context import AppContext, get_ctx
from service.credit import service
from service.credit.schemas import Consent, ConsentState, CreditReport, CreditReportPage
from service.db.models import Lender
from service.errors import responses
from service.idempotency import mutate
from service.parties.router import _create
from service.parties.schemas import CreatedParty, PartyCreate

router = APIRouter(prefix="/v1", tags=["credit"])
Small = Annotated[int, Query(ge=1, le=50, description="Page size (each item is a full report)")]


@router.post("/lenders", status_code=201, response_model=CreatedParty, responses=responses(400, 401, 403, 422))
async def create_lender(
    body: PartyCreate,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("operator")),
):
    """A lender (e.g. a bank's loan desk); the answer carries its `ln_` api_key once."""
    return await mutate(ctx, request, who, body, _create(Lender, "lnd", "ln", "lender", body.name))


@router.post("/merchants/me/credit-consent", response_model=ConsentState, responses=responses(400, 401, 403, 409, 422))
async def credit_consent(
    body: Consent, request: Request, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("merchant"))
):
    """Consent (true) to show this merchant's figures to lenders, or withdraw it (false)."""

    async def op(tx):
        return 200, await service.set_consent(tx, who.party_id, body.consent)

    return await mutate(ctx, request, who, body, op)


@router.get("/credit/merchants", response_model=CreditReportPage, responses=responses(401, 403, 422))
async def list_reports(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("lender")),
    limit: Small = 20,
    after: After = None,
):
    """Consenting merchants only, each with its record and recommendation."""
    async with ctx.engines.reader.connect() as conn:
        return await service.many(conn, limit, after, ctx.clock.now())


@router.get("/credit/merchants/{merchant_id}", response_model=CreditReport, responses=responses(401, 403, 404, 422))
async def one_report(
    merchant_id: Annotated[str, StringConstraints(max_length=40)],
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("lender")),
):
    async with ctx.engines.reader.connect() as conn:
        return await service.one(conn, merchant_id, ctx.clock.now())
