"""Credit reports for lenders (信用推介): consent, a merchant's record by month, and the recommendation.

This module owns the consent rows (each change is a ledger entry) and the report a lender reads: the
months on the platform, the worst health code of each calendar month (from the `health_code` ledger
entries), the money of each month (from the risk module's daily counters), the refund and complaint
rates, and `risk.credit.recommend`'s verdict with its reasons. Months are UTC calendar months, as the
daily counters' days are UTC days. Nothing about any consumer is read or shown.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import orjson

from risk.credit import DEFAULT_CREDIT_POLICY, CreditPolicy, MonthFigures, rate_bp, recommend
from risk.policy import CODES
from service.core.clock import iso
from service.credit import repository
from service.db.writer import Tx
from service.http.errors import NotFound

HISTORY_MONTHS = 24
EPOCH = date(1970, 1, 1)
WORST = {c: i for i, c in enumerate(CODES)}  # green < yellow < red


def month_of(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def month_start(d: date) -> date:
    return d.replace(day=1)


def add_months(d: date, n: int) -> date:
    k = d.year * 12 + d.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


def whole_months(since: datetime, now: datetime) -> int:
    n = (now.year - since.year) * 12 + now.month - since.month
    if (now.day, now.time()) < (since.day, since.time()):
        n -= 1
    return max(0, n)


async def set_consent(tx: Tx, merchant_id: str, consent: bool) -> dict:
    row = await repository.consent(tx.conn, merchant_id)
    if row is not None and row.consent == consent:
        return {
            "merchant_id": merchant_id,
            "consent": consent,
            "updated_at": iso(row.updated_at),
            "ledger_seq": int(row.ledger_seq),
        }
    if row is None and not consent:  # nothing was ever shared: nothing to withdraw, nothing to record
        return {"merchant_id": merchant_id, "consent": False, "updated_at": None, "ledger_seq": None}
    seq = tx.append("credit_consent", merchant_id=merchant_id, consent=consent)
    store = repository.add_consent if row is None else repository.set_consent
    await store(tx.conn, merchant_id, consent, tx.now, seq)
    return {"merchant_id": merchant_id, "consent": consent, "updated_at": iso(tx.now), "ledger_seq": seq}


async def code_by_month(conn, merchant_id: str, first: date, months: list[str]) -> dict[str, str]:
    """The worst code held at any time in each month, from the ledger's code changes."""
    changes = [(r.time.date(), orjson.loads(r.canonical)) for r in await repository.code_changes(conn, merchant_id)]
    if changes:
        current = changes[0][1]["from_code"]
    else:
        current = await repository.current_code(conn, merchant_id) or "green"
    out: dict[str, str] = {}
    i = 0
    for m in months:
        y, mo = int(m[:4]), int(m[5:])
        end = add_months(date(y, mo, 1), 1)
        worst = current
        while i < len(changes) and changes[i][0] < end:
            current = changes[i][1]["to_code"]
            worst = max(worst, current, key=lambda c: WORST.get(c, 0))
            i += 1
        out[m] = worst
    return out


async def report(conn, merchant, now: datetime, policy: CreditPolicy = DEFAULT_CREDIT_POLICY) -> dict:
    created = merchant.created_at
    first = month_start(created.date())
    this_month = month_start(now.date())
    start = max(first, add_months(this_month, -(HISTORY_MONTHS - 1)))
    months = []
    m = start
    while m <= this_month:
        months.append(month_of(m))
        m = add_months(m, 1)
    from_day = (start - EPOCH).days
    daily = await repository.daily_from(conn, merchant.id, from_day)
    sums = {k: {"released": 0, "issued": 0, "refunded": 0, "cards_sold": 0, "complaints": 0} for k in months}
    for r in daily:
        k = month_of(EPOCH + timedelta(days=int(r.day)))
        if k in sums:
            for f in sums[k]:
                sums[k][f] += int(getattr(r, f))
    codes = await code_by_month(conn, merchant.id, first, months)
    figures = [MonthFigures(month=k, worst_code=codes[k], **sums[k]) for k in months]
    whole = [f for f in figures if f.month != month_of(this_month)]  # the current month is not over
    verdict = recommend(whole_months(created, now), whole, policy)
    tally = {c: sum(1 for f in whole if f.worst_code == c) for c in CODES}
    issued = sum(f.issued for f in figures)
    sold = sum(f.cards_sold for f in figures)
    return {
        "merchant_id": merchant.id,
        "name": merchant.name,
        "uscc": merchant.uscc,
        "category": merchant.category,
        "status": merchant.status,
        "onboarded_at": iso(created),
        "months_on_platform": whole_months(created, now),
        "code_history": {
            "months": [{"month": f.month, "code": f.worst_code} for f in figures],
            "green": tally["green"],
            "yellow": tally["yellow"],
            "red": tally["red"],
        },
        "monthly": [
            {
                "month": f.month,
                "released": f.released,
                "issued": f.issued,
                "refunded": f.refunded,
                "cards_sold": f.cards_sold,
                "complaints": f.complaints,
                "complete": f.month != month_of(this_month),
            }
            for f in figures
        ],
        "refund_rate_bp": rate_bp(sum(f.refunded for f in figures), issued),
        "complaint_rate_bp": rate_bp(sum(f.complaints for f in figures), sold),
        "recommendation": {
            "recommended": verdict.recommended,
            "reasons": list(verdict.reasons),
            "failed": list(verdict.failed),
            "judged_refund_rate_bp": verdict.refund_rate_bp,
            "judged_complaint_rate_bp": verdict.complaint_rate_bp,
            "policy_version": verdict.policy_version,
            "policy": policy.to_dict(),
        },
        "currency": "CNY",
    }


async def one(conn, merchant_id: str, now: datetime) -> dict:
    m = await repository.consenting_merchant(conn, merchant_id)
    if m is None:  # a merchant that has not consented does not exist for a lender
        raise NotFound("No such merchant among those sharing their figures.", "merchant_not_found")
    return await report(conn, m, now)


async def many(conn, limit: int, after: str | None, now: datetime) -> dict:
    rows = await repository.consenting_page(conn, limit, after)
    items = [await report(conn, m, now) for m in rows[:limit]]
    return {"items": items, "next_cursor": items[-1]["merchant_id"] if len(rows) > limit and items else None}
