"""The operator rotates and revokes the API keys of merchants, regulators and auditors (SPEC §8).

Rotation issues a new key (shown once) and ends the party's old keys at once, or after the grace
the operator names, so a merchant's terminals can be switched over without an outage. Revocation
ends every key of the party. Both change the shared auth epoch in the same transaction (see
`service.revocation`), so every replica refuses an ended key from the moment the write commits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Request
from sqlalchemy import delete, func, insert, or_, select, update

from service.auth import Principal, require
from service.clock import iso
from service.context import AppContext, get_ctx
from service.db.models import ApiToken, Auditor, Merchant, Regulator
from service.errors import NotFound, responses
from service.idempotency import mutate
from service.ids import new_token, token_hash
from service.keys_api.schemas import KeyRotation, RevokedKeys, RotatedKey
from service.revocation import bump_epoch

router = APIRouter(prefix="/v1/keys", tags=["keys"])
tokens_t = ApiToken.__table__
KEYED = (
    (Merchant.__table__, "merchant", "mk"),
    (Regulator.__table__, "regulator", "rg"),
    (Auditor.__table__, "auditor", "au"),
)
PartyId = Annotated[str, Path(min_length=1, max_length=40)]


async def _party(tx, party_id: str) -> tuple[str, str]:
    for table, role, prefix in KEYED:
        if (await tx.conn.execute(select(table.c.id).where(table.c.id == party_id))).first():
            return role, prefix
    raise NotFound("No merchant, regulator or auditor has this id.", "party_not_found")


@router.post(
    "/{party_id}/rotate", status_code=201, response_model=RotatedKey, responses=responses(400, 401, 403, 404, 422)
)
async def rotate_key(
    party_id: PartyId,
    request: Request,
    body: Annotated[KeyRotation | None, Body()] = None,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("operator")),
):
    """A new `api_key` for the party (shown once); its other keys stop now or when `grace_seconds` have passed."""
    body = body or KeyRotation()

    async def op(tx):
        role, prefix = await _party(tx, party_id)
        token = new_token(prefix)
        t = tokens_t
        if body.grace_seconds == 0:
            ended = (await tx.conn.execute(delete(t).where(t.c.party_id == party_id))).rowcount
            old_until = None
        else:
            old_until = tx.now + timedelta(seconds=body.grace_seconds)
            ended = (
                await tx.conn.execute(
                    update(t)
                    .where(t.c.party_id == party_id, or_(t.c.expires_at.is_(None), t.c.expires_at > old_until))
                    .values(expires_at=old_until)
                )
            ).rowcount
        await tx.conn.execute(
            insert(t).values(token_hash=token_hash(token), role=role, party_id=party_id, created_at=tx.now)
        )
        await bump_epoch(tx)
        return 201, {
            "party_id": party_id,
            "role": role,
            "api_key": token,
            "old_keys": ended,
            "old_keys_expire_at": iso(old_until or tx.now),
        }

    return await mutate(ctx, request, who, body, op)


@router.post("/{party_id}/revoke", response_model=RevokedKeys, responses=responses(400, 401, 403, 404))
async def revoke_keys(
    party_id: PartyId,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("operator")),
):
    """End every key of the party at once (a leaked key, an offboarded bureau); rotate to issue a new one."""

    async def op(tx):
        role, _ = await _party(tx, party_id)
        t = tokens_t
        live = (
            await tx.conn.execute(
                select(func.count())
                .select_from(t)
                .where(t.c.party_id == party_id, or_(t.c.expires_at.is_(None), t.c.expires_at > tx.now))
            )
        ).scalar_one()
        await tx.conn.execute(delete(t).where(t.c.party_id == party_id))
        await bump_epoch(tx)
        return 200, {"party_id": party_id, "role": role, "revoked": live, "revoked_at": iso(tx.now)}

    return await mutate(ctx, request, who, {}, op)
