"""Every statement on the consumer tables: consumers, phone verifications, the SMS outbox, and the
per-address limit of the anonymous routes (`rate_limits`).

Core statements on the writer's connection (or a reader's); the rules are in
`service/consumers/service.py`, `verification.py` and `sms.py`. A consumer's API tokens are issued
through `service/keys_api/repository.py`, its confirmation inbox read through
`service/redemptions/repository.py`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update

from service.db.models import Consumer, PhoneVerification, RateLimit, SmsOutbox

# -- consumers ----------------------------------------------------------------------------------
consumers_t = Consumer.__table__


async def get(conn, consumer_id: str):
    return (await conn.execute(select(consumers_t).where(consumers_t.c.id == consumer_id))).first()


async def id_by_phone(conn, lookup: str) -> str | None:
    """The consumer registered with this phone (by its vault lookup key), if any."""
    return (await conn.execute(select(consumers_t.c.id).where(consumers_t.c.phone_lookup == lookup))).scalar()


async def add(conn, **values) -> None:
    await conn.execute(insert(consumers_t).values(**values))


# -- phone verifications ------------------------------------------------------------------------
verifications_t = PhoneVerification.__table__


async def codes_sent_since(conn, lookup: str, since: datetime) -> int:
    """How many verifications were created for a phone after `since`."""
    t = verifications_t
    stmt = select(func.count()).select_from(t).where(t.c.phone_lookup == lookup, t.c.created_at > since)
    return (await conn.execute(stmt)).scalar_one()


async def add_verification(conn, **values) -> None:
    await conn.execute(insert(verifications_t).values(**values))


async def verification(conn, verification_id: str):
    return (await conn.execute(select(verifications_t).where(verifications_t.c.id == verification_id))).first()


async def set_attempts(conn, verification_id: str, attempts: int) -> None:
    t = verifications_t
    await conn.execute(update(t).where(t.c.id == verification_id).values(attempts=attempts))


async def spend(conn, verification_id: str, now: datetime) -> bool:
    """Mark the verification used, unless it already was; whether this call spent it."""
    t = verifications_t
    stmt = update(t).where(t.c.id == verification_id, t.c.used_at.is_(None)).values(used_at=now)
    return (await conn.execute(stmt)).rowcount == 1


# -- the SMS outbox -----------------------------------------------------------------------------
outbox_t = SmsOutbox.__table__


async def add_message(conn, **values) -> None:
    await conn.execute(insert(outbox_t).values(**values))


async def outbox(conn, lookup: str, limit: int = 50) -> list:
    """The last `limit` texts sent to a phone (by its vault lookup key), oldest first."""
    t = outbox_t
    stmt = select(t.c.text, t.c.code, t.c.sent_at).where(t.c.phone_lookup == lookup).order_by(t.c.id.desc())
    return list(reversed((await conn.execute(stmt.limit(limit))).all()))


# -- the anonymous routes' per-address limit ----------------------------------------------------
limits_t = RateLimit.__table__


async def limit_window(conn, bucket: str):
    """The bucket's (count, window_start), or None before its first attempt."""
    t = limits_t
    return (await conn.execute(select(t.c.count, t.c.window_start).where(t.c.bucket == bucket))).first()


async def start_limit(conn, bucket: str, window: datetime) -> None:
    await conn.execute(insert(limits_t).values(bucket=bucket, count=1, window_start=window))


async def set_limit(conn, bucket: str, **values) -> None:
    """Change the bucket's count (and its window start, for a new window)."""
    await conn.execute(update(limits_t).where(limits_t.c.bucket == bucket).values(**values))
