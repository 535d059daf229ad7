"""Merchants: onboarding with a checked USCC, closure, default, the abnormal list and delisting."""

from __future__ import annotations

from datetime import timedelta

from service.cards import refunds
from service.cards import repository as cards_repo
from service.core.clock import iso
from service.core.ids import new_id, new_token
from service.core.uscc import uscc_problem
from service.db.writer import Tx
from service.event_log.service import emit
from service.health import service as health
from service.http.errors import Conflict, NotFound, Unprocessable
from service.keys_api import repository as keys
from service.merchants import repository as repo


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
    m = await repo.get(tx_conn, merchant_id)
    if m is None:
        raise NotFound("No such merchant.", "merchant_not_found")
    return m


async def onboard(tx: Tx, name: str, uscc: str, category: str) -> dict:
    uscc = uscc.upper()
    problem = uscc_problem(uscc)
    if problem:
        raise Unprocessable(f"uscc: {problem}.", "invalid_uscc")
    if await repo.uscc_taken(tx.conn, uscc):
        raise Conflict("A merchant with this unified social credit code is already onboarded.", "uscc_taken")
    mid = new_id("mch")
    token = new_token("mk")
    await repo.insert_merchant(tx.conn, mid, name, uscc, category, tx.now)
    await keys.issue(tx, token, "merchant", mid)
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
    await repo.set_values(tx.conn, merchant_id, status="closing", closure_date=effective_date, closure_reason=reason)
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
    await repo.set_values(tx.conn, merchant_id, status="defaulted", default_reason=reason)
    refunded = await refunds.refund_all_for_merchant_default(tx, merchant_id)
    out = merchant_out(await load(tx.conn, merchant_id))
    out.update(cards_refunded=refunded, ledger_seq=seq)
    await health.regulatory_alert(tx, merchant_id, "merchant_defaulted", seq)
    emit(tx, "merchant.defaulted", out, merchant_id=merchant_id, ledger_seq=seq)
    return out


async def close_due(tx: Tx, limit: int = 20) -> int:
    """Sweeper: merchants whose closure date has come are closed and every card refunded."""
    due = await repo.closing_due(tx.conn, tx.now, limit)
    for merchant_id in due:
        seq = tx.append("merchant_closed", merchant_id=merchant_id)
        await repo.set_values(tx.conn, merchant_id, status="closed")
        await refunds.refund_all_for_closure(tx, merchant_id)
        out = merchant_out(await load(tx.conn, merchant_id))
        emit(tx, "merchant.closed", out, merchant_id=merchant_id, ledger_seq=seq)
    return len(due)


async def set_flag(tx: Tx, merchant_id: str, flag: str, listed: bool, actor: str) -> dict:
    m = await load(tx.conn, merchant_id)
    current = getattr(m, flag)
    if current == listed:
        raise Conflict(f"The merchant is already {'on' if listed else 'off'} that list.", "no_change")
    kind = {"abnormal": "abnormal_list", "delisted": "delisting"}[flag] + ("_set" if listed else "_lifted")
    seq = tx.append(kind, merchant_id=merchant_id, actor=actor)
    if flag == "delisted" and not listed:
        await health.restart_grace(tx, merchant_id)
    await repo.set_values(tx.conn, merchant_id, **{flag: listed})
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
    (issued, released, refunded, outstanding, held), by_status = await cards_repo.merchant_totals(conn, merchant_id)
    return {
        "merchant_id": merchant_id,
        "issued": issued,
        "released": released,
        "refunded": refunded,
        "outstanding": outstanding,
        "held": held,
        "cards_by_status": {s: by_status.get(s, 0) for s in ("active", "exhausted", "refunded")},
    }
