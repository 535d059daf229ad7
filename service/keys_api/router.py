"""The operator rotates and revokes the API keys of merchants, regulators and auditors (SPEC §8).

Rotation issues a new key (shown once) and ends the party's old keys at once, or after the grace
the operator names, so a merchant's terminals can be switched over without an outage. Revocation
ends every key of the party. Both change the shared auth epoch in the same transaction (see
`service.security.revocation`), so every replica refuses an ended key from the moment the write commits.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request

from service.http.common import Ctx, answer, caller
from service.http.errors import responses
from service.keys_api import service
from service.keys_api.schemas import KeyRotation, RevokedKeys, RotatedKey
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1/keys", tags=["keys"])
PartyId = Annotated[str, Path(min_length=1, max_length=40)]


@router.post(
    "/{party_id}/rotate", status_code=201, response_model=RotatedKey, responses=responses(400, 401, 403, 404, 422)
)
async def rotate_key(
    party_id: PartyId,
    request: Request,
    ctx: Ctx,
    who: caller("operator"),
    body: Annotated[KeyRotation | None, Body()] = None,
):
    """A new `api_key` for the party (shown once); its other keys stop now or when `grace_seconds` have passed."""
    body = body or KeyRotation()
    return await mutate(ctx, request, who, body, answer(201, service.rotate, party_id, body.grace_seconds))


@router.post("/{party_id}/revoke", response_model=RevokedKeys, responses=responses(400, 401, 403, 404))
async def revoke_keys(party_id: PartyId, request: Request, ctx: Ctx, who: caller("operator")):
    """End every key of the party at once (a leaked key, an offboarded bureau); rotate to issue a new one."""
    return await mutate(ctx, request, who, {}, answer(200, service.revoke, party_id))
