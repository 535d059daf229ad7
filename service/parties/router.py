"""Regulators (market supervision bureau) and auditors (the custodian bank), created by the operator."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.http.common import Ctx, answer, caller
from service.http.errors import responses
from service.parties import service
from service.parties.schemas import CreatedParty, PartyCreate
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1", tags=["parties"])
CREATED = dict(status_code=201, response_model=CreatedParty, responses=responses(400, 401, 403, 422))


@router.post("/regulators", **CREATED)
async def create_regulator(body: PartyCreate, request: Request, ctx: Ctx, who: caller("operator")):
    return await mutate(ctx, request, who, body, answer(201, service.create, service.REGULATOR, body.name))


@router.post("/auditors", **CREATED)
async def create_auditor(body: PartyCreate, request: Request, ctx: Ctx, who: caller("operator")):
    return await mutate(ctx, request, who, body, answer(201, service.create, service.AUDITOR, body.name))
