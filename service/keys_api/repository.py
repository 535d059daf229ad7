"""Statements on the api_tokens table: issue, end and count a party's keys; and whether a keyed party exists."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, insert, or_, select, update

from service.core.ids import token_hash
from service.db.models import ApiToken, Auditor, Merchant, Regulator

tokens_t = ApiToken.__table__
PARTY_TABLES = {"merchant": Merchant.__table__, "regulator": Regulator.__table__, "auditor": Auditor.__table__}


async def issue(tx, token: str, role: str, party_id: str) -> None:
    """Store a new key (only its hash) for the party."""
    await tx.conn.execute(
        insert(tokens_t).values(token_hash=token_hash(token), role=role, party_id=party_id, created_at=tx.now)
    )


async def end_all(conn, party_id: str) -> int:
    """Delete every key of the party; returns how many there were."""
    return (await conn.execute(delete(tokens_t).where(tokens_t.c.party_id == party_id))).rowcount


async def end_one(conn, digest: str, party_id: str) -> None:
    await conn.execute(delete(tokens_t).where(tokens_t.c.token_hash == digest, tokens_t.c.party_id == party_id))


def _live_after(party_id: str, moment: datetime):
    return tokens_t.c.party_id == party_id, or_(tokens_t.c.expires_at.is_(None), tokens_t.c.expires_at > moment)


async def expire_all(conn, party_id: str, until: datetime) -> int:
    """Keys of the party that would outlive `until` end then; returns how many."""
    stmt = update(tokens_t).where(*_live_after(party_id, until)).values(expires_at=until)
    return (await conn.execute(stmt)).rowcount


async def count_live(conn, party_id: str, now: datetime) -> int:
    stmt = select(func.count()).select_from(tokens_t).where(*_live_after(party_id, now))
    return (await conn.execute(stmt)).scalar_one()


async def party_exists(conn, role: str, party_id: str) -> bool:
    """Whether a party of `role` (merchant, regulator or auditor) has this id."""
    table = PARTY_TABLES[role]
    return (await conn.execute(select(table.c.id).where(table.c.id == party_id))).first() is not None


async def token_row(conn, digest: str):
    """(role, party_id, expires_at) of the key whose hash is `digest`, or None: what authentication reads."""
    stmt = select(tokens_t.c.role, tokens_t.c.party_id, tokens_t.c.expires_at).where(tokens_t.c.token_hash == digest)
    return (await conn.execute(stmt)).first()
