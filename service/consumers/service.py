"""Consumers register and sign in with a verified phone (SPEC §8); the phone is kept encrypted (AES-GCM)
and found by a keyed hash."""

from __future__ import annotations

import re

from service.consumers import repository, verification
from service.core.ids import new_id
from service.db.writer import Tx
from service.http.errors import Conflict, NotFound, Unprocessable
from service.keys_api import repository as keys
from service.security.keys import PhoneVault

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
    if await repository.id_by_phone(tx.conn, lookup) is not None:
        # only a holder of this phone's code learns this
        return verification.refusal(
            Conflict(
                "This phone number is already registered; sign in at /v1/consumers/sessions.",
                "phone_already_registered",
            )
        )
    cid = new_id("cns")
    await repository.add(
        tx.conn,
        id=cid,
        name=name,
        phone_ciphertext=vault.encrypt(phone),
        phone_lookup=lookup,
        phone_hint=mask(phone),
        created_at=tx.now,
    )
    await keys.issue(tx, token, "consumer", cid)
    return 201, {"id": cid, "name": name, "phone_hint": mask(phone)}


async def sign_in(
    tx: Tx, vault: PhoneVault, phone: str, verification_id: str, code: str, token: str
) -> tuple[int, dict]:
    """A new token for the phone's owner (a new device); the consumer's other tokens keep working."""
    phone = normalize_phone(phone)
    failed = await verification.check_code(tx, vault, verification_id, phone, code)
    if failed is not None:
        return failed
    consumer_id = await repository.id_by_phone(tx.conn, vault.lookup(phone))
    if consumer_id is None:
        return verification.refusal(
            NotFound("No consumer has this phone number; register at POST /v1/consumers.", "phone_not_registered")
        )
    await keys.issue(tx, token, "consumer", consumer_id)
    return 201, {"consumer_id": consumer_id}


async def load(conn, consumer_id: str):
    c = await repository.get(conn, consumer_id)
    if c is None:
        raise NotFound("No such consumer.", "consumer_not_found")
    return c
