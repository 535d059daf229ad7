"""Consumers register and sign in with a verified phone (SPEC §8); the phone is kept encrypted (AES-GCM)
and found by a keyed hash."""

from __future__ import annotations

import re

from sqlalchemy import insert, select

from service.consumers import verification
from service.core.ids import new_id, token_hash
from service.db.models import ApiToken, Consumer
from service.db.writer import Tx
from service.http.errors import NotFound, Unprocessable
from service.security.keys import PhoneVault

consumers_t = Consumer.__table__
tokens_t = ApiToken.__table__

PHONE = re.compile(r"^(?:\+?86)?(1[3-9][0-9]{9})$")


def normalize_phone(phone: str) -> str:
    m = PHONE.match(phone.replace(" ", "").replace("-", ""))
    if not m:
        raise Unprocessable(
            "phone must be a mainland China mobile number (11 digits starting with 1).", "invalid_phone"
        )
    return m.group(1)


def mask(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:]


def consumer_out(c) -> dict:
    return {"id": c.id, "name": c.name, "phone_hint": c.phone_hint}


async def register(
    tx: Tx, vault: PhoneVault, name: str, phone: str, verification_id: str, code: str, token: str
) -> tuple[int, dict]:
    """Register with a proven phone. The answer kept for an Idempotency-Key replay never holds `token`:
    the router adds it to the first answer only."""
    phone = normalize_phone(phone)
    failed = await verification.check_code(tx, vault, verification_id, phone, code)
    if failed is not None:
        return failed
    lookup = vault.lookup(phone)
    if (await tx.conn.execute(select(consumers_t.c.id).where(consumers_t.c.phone_lookup == lookup))).first():
        # only a holder of this phone's code learns this
        return verification.error(
            409,
            "phone_already_registered",
            "This phone number is already registered; sign in at /v1/consumers/sessions.",
        )
    cid = new_id("cns")
    await tx.conn.execute(
        insert(consumers_t).values(
            id=cid,
            name=name,
            phone_ciphertext=vault.encrypt(phone),
            phone_lookup=lookup,
            phone_hint=mask(phone),
            created_at=tx.now,
        )
    )
    await tx.conn.execute(
        insert(tokens_t).values(token_hash=token_hash(token), role="consumer", party_id=cid, created_at=tx.now)
    )
    return 201, {"id": cid, "name": name, "phone_hint": mask(phone)}


async def sign_in(
    tx: Tx, vault: PhoneVault, phone: str, verification_id: str, code: str, token: str
) -> tuple[int, dict]:
    """A new token for the phone's owner (a new device); the consumer's other tokens keep working."""
    phone = normalize_phone(phone)
    failed = await verification.check_code(tx, vault, verification_id, phone, code)
    if failed is not None:
        return failed
    row = (
        await tx.conn.execute(select(consumers_t.c.id).where(consumers_t.c.phone_lookup == vault.lookup(phone)))
    ).first()
    if row is None:
        return verification.error(
            404, "phone_not_registered", "No consumer has this phone number; register at POST /v1/consumers."
        )
    await tx.conn.execute(
        insert(tokens_t).values(token_hash=token_hash(token), role="consumer", party_id=row.id, created_at=tx.now)
    )
    return 201, {"consumer_id": row.id}


async def load(conn, consumer_id: str):
    c = (await conn.execute(select(consumers_t).where(consumers_t.c.id == consumer_id))).first()
    if c is None:
        raise NotFound("No such consumer.", "consumer_not_found")
    return c
