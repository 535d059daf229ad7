"""Every statement of credit recommendation: the consent rows, and the reads a lender's report makes
(consenting merchants, their daily risk counters, current health code and the ledger's code changes).

The rules are in `service/credit/service.py`. Nothing here reads a consumer.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update

from service.db.models import CreditConsent, LedgerEntry, Merchant, MerchantDaily, MerchantHealth

consents_t = CreditConsent.__table__
merchants_t = Merchant.__table__
daily_t = MerchantDaily.__table__
health_t = MerchantHealth.__table__
entries_t = LedgerEntry.__table__


# -- consent --------------------------------------------------------------------------------------
async def consent(conn, merchant_id: str):
    """The merchant's consent row, or None if it never consented."""
    return (await conn.execute(select(consents_t).where(consents_t.c.merchant_id == merchant_id))).first()


async def add_consent(conn, merchant_id: str, consent: bool, now: datetime, ledger_seq: int) -> None:
    await conn.execute(
        insert(consents_t).values(merchant_id=merchant_id, consent=consent, updated_at=now, ledger_seq=ledger_seq)
    )


async def set_consent(conn, merchant_id: str, consent: bool, now: datetime, ledger_seq: int) -> None:
    stmt = update(consents_t).where(consents_t.c.merchant_id == merchant_id)
    await conn.execute(stmt.values(consent=consent, updated_at=now, ledger_seq=ledger_seq))


# -- what a report reads --------------------------------------------------------------------------
def _consenting():
    return (
        select(merchants_t)
        .join(consents_t, consents_t.c.merchant_id == merchants_t.c.id)
        .where(consents_t.c.consent.is_(True))
    )


async def consenting_merchant(conn, merchant_id: str):
    """The merchant's row if it consents to show its figures, else None."""
    return (await conn.execute(_consenting().where(merchants_t.c.id == merchant_id))).first()


async def consenting_page(conn, limit: int, after: str | None) -> list:
    """Consenting merchants in id order after the cursor, one more than `limit` (the next page's sign)."""
    stmt = _consenting().order_by(merchants_t.c.id).limit(limit + 1)
    if after:
        stmt = stmt.where(merchants_t.c.id > after)
    return (await conn.execute(stmt)).all()


async def daily_from(conn, merchant_id: str, from_day: int) -> list:
    """The merchant's daily risk counters from day `from_day` (days since 1970-01-01, UTC) on."""
    stmt = select(daily_t).where(daily_t.c.merchant_id == merchant_id, daily_t.c.day >= from_day)
    return (await conn.execute(stmt)).all()


async def code_changes(conn, merchant_id: str) -> list:
    """(time, canonical) of the merchant's `health_code` ledger entries, in ledger order."""
    e = entries_t.c
    stmt = select(e.time, e.canonical).where(e.merchant_id == merchant_id, e.kind == "health_code").order_by(e.seq)
    return (await conn.execute(stmt)).all()


async def current_code(conn, merchant_id: str) -> str | None:
    return (await conn.execute(select(health_t.c.code).where(health_t.c.merchant_id == merchant_id))).scalar()
