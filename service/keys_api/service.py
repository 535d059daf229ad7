"""Key rotation and revocation: which party a key belongs to, a new key, the old ones ended (SPEC §8)."""

from __future__ import annotations

from datetime import timedelta

from service.core.clock import iso
from service.core.ids import new_token
from service.db.writer import Tx
from service.http.errors import NotFound
from service.keys_api import repository
from service.security.revocation import bump_epoch

KEYED = (("merchant", "mk"), ("regulator", "rg"), ("auditor", "au"))  # the roles rotated here, their key prefix


async def party_role(tx: Tx, party_id: str) -> tuple[str, str]:
    for role, prefix in KEYED:
        if await repository.party_exists(tx.conn, role, party_id):
            return role, prefix
    raise NotFound("No merchant, regulator or auditor has this id.", "party_not_found")


async def rotate(tx: Tx, party_id: str, grace_seconds: int) -> dict:
    role, prefix = await party_role(tx, party_id)
    token = new_token(prefix)
    if grace_seconds == 0:
        ended, old_until = await repository.end_all(tx.conn, party_id), None
    else:
        old_until = tx.now + timedelta(seconds=grace_seconds)
        ended = await repository.expire_all(tx.conn, party_id, old_until)
    await repository.issue(tx, token, role, party_id)
    await bump_epoch(tx)
    return {
        "party_id": party_id,
        "role": role,
        "api_key": token,
        "old_keys": ended,
        "old_keys_expire_at": iso(old_until or tx.now),
    }


async def revoke(tx: Tx, party_id: str) -> dict:
    role, _ = await party_role(tx, party_id)
    live = await repository.count_live(tx.conn, party_id, tx.now)
    await repository.end_all(tx.conn, party_id)
    await bump_epoch(tx)
    return {"party_id": party_id, "role": role, "revoked": live, "revoked_at": iso(tx.now)}
