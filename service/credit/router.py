"""HTTP for credit recommendation (信用推介): lenders, merchants' consent, the reports lenders read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import StringConstraints

from service.credit import service
from service.credit.schemas import Consent, ConsentState, CreditReport, CreditReportPage
from service.http.common import After, Ctx, answer, caller, read
from service.http.errors import responses
from service.parties import service as parties
from service.parties.router import CREATED
from service.parties.schemas import PartyCreate
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1", tags=["credit"])
Small = Annotated[int, Query(ge=1, le=50, description="Page size (each item is a full report)")]
Lender = caller("lender")


@router.post("/lenders", **CREATED)
async def create_lender(body: PartyCreate, request: Request, ctx: Ctx, who: caller("operator")):
    """A lender (e.g. a bank's loan desk); the answer carries its `ln_` api_key once."""
    return await mutate(ctx, request, who, body, answer(201, parties.create, parties.LENDER, body.name))


@router.post("/merchants/me/credit-consent", response_model=ConsentState, responses=responses(400, 401, 403, 409, 422))
async def credit_consent(body: Consent, request: Request, ctx: Ctx, who: caller("merchant")):
    """Consent (true) to show this merchant's figures to lenders, or withdraw it (false)."""
    return await mutate(ctx, request, who, body, answer(200, service.set_consent, who.party_id, body.consent))


@router.get("/credit/merchants", response_model=CreditReportPage, responses=responses(401, 403, 422))
async def list_reports(ctx: Ctx, who: Lender, limit: Small = 20, after: After = None):
    """Consenting merchants only, each with its record and recommendation."""
    return await read(ctx, service.many, limit, after, ctx.clock.now())


@router.get("/credit/merchants/{merchant_id}", response_model=CreditReport, responses=responses(401, 403, 404, 422))
async def one_report(merchant_id: Annotated[str, StringConstraints(max_length=40)], ctx: Ctx, who: Lender):
    return await read(ctx, service.one, merchant_id, ctx.clock.now())
