"""Consumers register themselves; the phone is kept encrypted (AES-GCM) and found by a keyed hash."""

from __future__ import annotations

import re
from sqlalchemy import insert, select, update

from service.db.models import ApiToken, Consumer, RateLimit
from service.db.writer import Tx
from service.errors import Conflict, NotFound, Unprocessable
from service.ids import new_id, new_token, token_hash
from service.keys import PhoneVault

consumers_t = Consumer.__table__
tokens_t = ApiToken.__table__
limits_t = RateLimit.__table__

PHONE = re.compile(r"^(?:\+?86)?(1[3-9][0-9]{9})$")


def normalize_phone(phone: str) -> str:
    m = PHONE.match(phone.replace(" ", "").replace("-", ""))
    if not m:
        raise Unprocessable("phone must be a mainland China mobile number (11 digits starting with 1).", "invalid_phone")
    return m.group(1)


def mask(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:]


def consumer_out(c) -> dict:
    return {"id": c.id, "name": c.name, "phone_hint": c.phone_hint}


async def over_rate_limit(tx: Tx, address: str, per_minute: int) -> bool:
    """Count this request against its address's current minute; True when over the limit."""
    window = tx.now.replace(second=0, microsecond=0)
    bucket = f"register:{address}"[:120]
    row = (await tx.conn.execute(select(limits_t.c.count, limits_t.c.window_start).where(limits_t.c.bucket == bucket))).first()
    if row is None:
        await tx.conn.execute(insert(limits_t).values(bucket=bucket, count=1, window_start=window))
        return False
    if row.window_start < window:
        await tx.conn.execute(update(limits_t).where(limits_t.c.bucket == bucket).values(count=1, window_start=window))
        return False
    await tx.conn.execute(update(limits_t).where(limits_t.c.bucket == bucket).values(count=row.count + 1))
    return row.count + 1 > per_minute


async def register(tx: Tx, vault: PhoneVault, name: str, phone: str) -> dict:
    phone = normalize_phone(phone)
    lookup = vault.lookup(phone)
    if (await tx.conn.execute(select(consumers_t.c.id).where(consumers_t.c.phone_lookup == lookup))).first():
        raise Conflict("This phone number is already registered.", "phone_already_registered")
    cid = new_id("cns")
    token = new_token("cs")
    await tx.conn.execute(insert(consumers_t).values(
        id=cid, name=name, phone_ciphertext=vault.encrypt(phone), phone_lookup=lookup, phone_hint=mask(phone),
        created_at=tx.now))
    await tx.conn.execute(insert(tokens_t).values(token_hash=token_hash(token), role="consumer", party_id=cid, created_at=tx.now))
    return {"id": cid, "name": name, "phone_hint": mask(phone), "token": token}


async def load(conn, consumer_id: str):
    c = (await conn.execute(select(consumers_t).where(consumers_t.c.id == consumer_id))).first()
    if c is None:
        raise NotFound("No such consumer.", "consumer_not_found")
    return c
