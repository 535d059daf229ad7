"""Regulators (market supervision bureau) and auditors (the custodian bank), created by the operator."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import insert

from service.auth import Principal, require
from service.context import AppContext, get_ctx
from service.db.models import ApiToken, Auditor, Regulator
from service.errors import responses
from service.idempotency import mutate
from service.ids import new_id, new_token, token_hash
from service.parties.schemas import CreatedParty, PartyCreate

router = APIRouter(prefix="/v1", tags=["parties"])


def _create(table, prefix: str, token_prefix: str, role: str, name: str):
    async def op(tx):
        pid = new_id(prefix)
        token = new_token(token_prefix)
        await tx.conn.execute(insert(table.__table__).values(id=pid, name=name, created_at=tx.now))
        await tx.conn.execute(
            insert(ApiToken.__table__).values(token_hash=token_hash(token), role=role, party_id=pid, created_at=tx.now)
        )
        return 201, {"id": pid, "name": name, "role": role, "api_key": token}

    return op


@router.post("/regulators", status_code=201, response_model=CreatedParty, responses=responses(400, 401, 403, 422))
async def create_regulator(
    body: PartyCreate,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("operator")),
):
    return await mutate(ctx, request, who, body, _create(Regulator, "reg", "rg", "regulator", body.name))


@router.post("/auditors", status_code=201, response_model=CreatedParty, responses=responses(400, 401, 403, 422))
async def create_auditor(
    body: PartyCreate,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("operator")),
):
    return await mutate(ctx, request, who, body, _create(Auditor, "aud", "au", "auditor", body.name))
