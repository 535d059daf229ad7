"""Merchants: onboarding with a checked USCC, closure, default, the abnormal list and delisting."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select, update

from service.cards import refunds
from service.cards.repository import cards_t
from service.clock import iso
from service.db.models import ApiToken, Merchant
from service.db.writer import Tx
from service.errors import Conflict, NotFound, Unprocessable
from service.event_log.service import emit
from service.health import service as health
from service.ids import new_id, new_token, token_hash
from service.uscc import uscc_problem

merchants_t = Merchant.__table__
tokens_t = ApiToken.__table__


def merchant_out(m) -> dict:
    status = m.status
    if status == "active" and m.delisted:
        status = "delisted"
    elif status == "active" and m.warned_at is not None:
        status = "warned"
    return {
        "id": m.id,
        "name": m.name,
        "uscc": m.uscc,
        "category": m.category,
        "status": status,
        "abnormal_listed": m.abnormal,
        "delisted": m.delisted,
        "warned_at": iso(m.warned_at),
        "closure_date": iso(m.closure_date),
        "created_at": iso(m.created_at),
    }


async def load(tx_conn, merchant_id: str):
    m = (await tx_conn.execute(select(merchants_t).where(merchants_t.c.id == merchant_id))).first()
    if m is None:
        raise NotFound("No such merchant.", "merchant_not_found")
    return m


async def onboard(tx: Tx, name: str, uscc: str, category: str) -> dict:
    uscc = uscc.upper()
    problem = uscc_problem(uscc)
    if problem:
        raise Unprocessable(f"uscc: {problem}.", "invalid_uscc")
    exists = (await tx.conn.execute(select(merchants_t.c.id).where(merchants_t.c.uscc == uscc))).first()
    if exists:
        raise Conflict("A merchant with this unified social credit code is already onboarded.", "uscc_taken")
    mid = new_id("mch")
    token = new_token("mk")
    await tx.conn.execute(
        insert(merchants_t).values(
            id=mid,
            name=name,
            uscc=uscc,
            category=category,
            status="active",
            abnormal=False,
            delisted=False,
            created_at=tx.now,
        )
    )
    await tx.conn.execute(
        insert(tokens_t).values(token_hash=token_hash(token), role="merchant", party_id=mid, created_at=tx.now)
    )
    tx.append("merchant_onboarded", merchant_id=mid, category=category)
    await health.start_merchant(tx, mid)
    out = merchant_out(await load(tx.conn, mid))
    out["api_key"] = token
    return out


async def announce_closure(tx: Tx, merchant_id: str, effective_date, reason: str, notice_days: int) -> dict:
    m = await load(tx.conn, merchant_id)
    if m.status != "active":
        raise Conflict(f"A merchant that is {m.status} cannot announce closure.", "merchant_not_active")
    if effective_date.tzinfo is None:
        raise Unprocessable(
            "effective_date must carry a time zone (ISO 8601, e.g. 2026-01-31T00:00:00Z).", "invalid_field"
        )
    if effective_date < tx.now + timedelta(days=notice_days):
        raise Unprocessable(f"effective_date must be at least {notice_days} days ahead.", "closure_notice_too_short")
    await tx.conn.execute(
        update(merchants_t)
        .where(merchants_t.c.id == merchant_id)
        .values(status="closing", closure_date=effective_date, closure_reason=reason)
    )
    seq = tx.append("merchant_closing", merchant_id=merchant_id, effective_date=iso(effective_date))
    out = merchant_out(await load(tx.conn, merchant_id))
    await health.regulatory_alert(tx, merchant_id, "closure_announced", seq)
    emit(tx, "merchant.closure_announced", out, merchant_id=merchant_id, ledger_seq=seq)
    return out


async def declare_default(tx: Tx, merchant_id: str, reason: str, actor: str) -> dict:
    m = await load(tx.conn, merchant_id)
    if m.status in ("defaulted", "closed"):
        raise Conflict(f"The merchant is already {m.status}.", "merchant_already_ended")
    seq = tx.append("merchant_default", merchant_id=merchant_id, actor=actor)
    await tx.conn.execute(
        update(merchants_t).where(merchants_t.c.id == merchant_id).values(status="defaulted", default_reason=reason)
    )
    refunded = await refunds.refund_all_for_merchant_default(tx, merchant_id)
    out = merchant_out(await load(tx.conn, merchant_id))
    out.update(cards_refunded=refunded, ledger_seq=seq)
    await health.regulatory_alert(tx, merchant_id, "merchant_defaulted", seq)
    emit(tx, "merchant.defaulted", out, merchant_id=merchant_id, ledger_seq=seq)
    return out


async def close_due(tx: Tx, limit: int = 20) -> int:
    """Sweeper: merchants whose closure date has come are closed and every card refunded."""
    due = (
        await tx.conn.execute(
            select(merchants_t.c.id)
            .where(merchants_t.c.status == "closing", merchants_t.c.closure_date <= tx.now)
            .limit(limit)
        )
    ).all()
    for m in due:
        seq = tx.append("merchant_closed", merchant_id=m.id)
        await tx.conn.execute(update(merchants_t).where(merchants_t.c.id == m.id).values(status="closed"))
        await refunds.refund_all_for_closure(tx, m.id)
        emit(tx, "merchant.closed", merchant_out(await load(tx.conn, m.id)), merchant_id=m.id, ledger_seq=seq)
    return len(due)


async def set_flag(tx: Tx, merchant_id: str, flag: str, listed: bool, actor: str) -> dict:
    m = await load(tx.conn, merchant_id)
    current = getattr(m, flag)
    if current == listed:
        raise Conflict(f"The merchant is already {'on' if listed else 'off'} that list.", "no_change")
    kind = {"abnormal": "abnormal_list", "delisted": "delisting"}[flag] + ("_set" if listed else "_lifted")
    seq = tx.append(kind, merchant_id=merchant_id, actor=actor)
    values = {flag: listed}
    if flag == "delisted" and not listed:
        await health.restart_grace(tx, merchant_id)
    await tx.conn.execute(update(merchants_t).where(merchants_t.c.id == merchant_id).values(**values))
    out = merchant_out(await load(tx.conn, merchant_id))
    event, alert = {
        "abnormal_list_set": ("merchant.abnormal_listed", "abnormal_listed"),
        "abnormal_list_lifted": ("merchant.abnormal_lifted", None),
        "delisting_set": ("merchant.delisted", None),
        "delisting_lifted": ("merchant.relisted", "delisting_lifted"),
    }[kind]
    if alert:
        await health.regulatory_alert(tx, merchant_id, alert, seq)
    emit(tx, event, out, merchant_id=merchant_id, ledger_seq=seq)
    return out


async def stats(conn, merchant_id: str) -> dict:
    row = (
        await conn.execute(
            select(
                func.coalesce(func.sum(cards_t.c.price), 0),
                func.coalesce(func.sum(cards_t.c.released), 0),
                func.coalesce(func.sum(cards_t.c.refunded), 0),
                func.coalesce(func.sum(cards_t.c.escrow), 0),
                func.coalesce(func.sum(cards_t.c.held), 0),
            ).where(cards_t.c.merchant_id == merchant_id)
        )
    ).first()
    by_status = dict(
        (
            await conn.execute(
                select(cards_t.c.status, func.count())
                .where(cards_t.c.merchant_id == merchant_id)
                .group_by(cards_t.c.status)
            )
        ).all()
    )
    return {
        "merchant_id": merchant_id,
        "issued": int(row[0]),
        "released": int(row[1]),
        "refunded": int(row[2]),
        "outstanding": int(row[3]),
        "held": int(row[4]),
        "cards_by_status": {s: int(by_status.get(s, 0)) for s in ("active", "exhausted", "refunded")},
    }
