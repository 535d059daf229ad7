"""Settlement batches (结算批次): what the custodian bank is told to pay, day by day, from the ledger.

This module owns settlement batches and their instructions (a payout to each merchant, a refund by
the original payment route to each refunded card), the bank's results per instruction, and closing
days (on demand and by the sweeper). A day is a calendar day in `ESCROW_SETTLEMENT_TIMEZONE`; its
money is what the ledger's `release` and `refund` entries of that day state: the ledger is the
source of truth, not the card rows. A merchant's payout is its releases plus its shares of quit
refunds (`merchant_share`); a refund instruction is a refund entry's amount, sent back by the
card's payment method and reference.

A batch is written once, through the single writer, and the date is unique: closing a day twice,
from two replicas or from the sweeper and an auditor at once, gives one batch.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import orjson

from ledger.canonical import canonical_json
from service.core.clock import iso
from service.core.ids import new_id
from service.db.writer import Tx
from service.http.common import page
from service.http.errors import Conflict, NotFound, Unprocessable
from service.settlements import repository

# Entries are appended in time order (one writer at a time, a clock that only moves forward); replicas'
# clocks may disagree a little, so the seq range found by time is widened by this much and then
# filtered by each entry's own time.
SKEW = timedelta(minutes=1)
SWEEP_DAYS_BACK = 7  # a service down for a few days closes the days it missed


@lru_cache(maxsize=8)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_day(value: str) -> date:
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise Unprocessable("date must be a calendar day, YYYY-MM-DD.", "invalid_date") from None


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The day's start and end (exclusive) in UTC."""
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end


async def seq_at(conn, when: datetime) -> int:
    """The first seq whose entry is at or after `when` (binary search on the primary key)."""
    lo, hi = 0, await repository.ledger_size(conn)
    while lo < hi:
        mid = (lo + hi) // 2
        t = await repository.entry_time(conn, mid)
        if t is None or t >= when:
            hi = mid
        else:
            lo = mid + 1
    return lo


async def day_entries(conn, start: datetime, end: datetime, kinds: tuple[str, ...]) -> list:
    """Entries of `kinds` whose time is in [start, end), in seq order."""
    lo = await seq_at(conn, start - SKEW)
    hi = await seq_at(conn, end + SKEW)
    if lo >= hi:
        return []
    return [r for r in await repository.entries_between(conn, lo, hi, kinds) if start <= r.time < end]


async def day_movements(conn, day: date, tz: ZoneInfo) -> tuple[dict[str, int], list[dict]]:
    """What the ledger says moved out of escrow that day: payouts per merchant, and refunds in seq order."""
    start, end = day_bounds(day, tz)
    payouts: dict[str, int] = {}
    refunds: list[dict] = []
    for r in await day_entries(conn, start, end, ("release", "refund")):
        e = orjson.loads(r.canonical)
        if r.kind == "release":
            share = e["amount"]
        else:
            share = e.get("merchant_share", 0)
            if e["amount"] > 0:
                refunds.append(
                    {
                        "card_id": r.card_id,
                        "merchant_id": r.merchant_id,
                        "amount": e["amount"],
                        "method": e.get("payment_method"),
                        "seq": int(r.seq),
                    }
                )
        if share:
            payouts[r.merchant_id] = payouts.get(r.merchant_id, 0) + share
    routes = await repository.card_routes(conn, [f["card_id"] for f in refunds])
    for f in refunds:
        method, reference = routes[f["card_id"]]
        f["method"] = f["method"] or method
        f["reference"] = reference
    return payouts, refunds


def _digest(day: str, payouts: list[dict], refunds: list[dict]) -> str:
    body = {
        "date": day,
        "payouts": [{k: p[k] for k in ("id", "merchant_id", "amount")} for p in payouts],
        "refunds": [{k: f[k] for k in ("id", "card_id", "amount", "method", "reference")} for f in refunds],
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


async def close_day(tx: Tx, day: date, tz_name: str) -> tuple[int, dict]:
    """Close `day`: 201 and the new batch, or 200 and the batch already made. 409 if the day has not ended."""
    conn = tx.conn
    key = day.isoformat()
    existing = await repository.batch_on(conn, key)
    if existing is not None:
        return 200, await batch_out(conn, existing)
    tz = zone(tz_name)
    _, end = day_bounds(day, tz)
    if tx.now < end:
        raise Conflict(f"{key} has not ended yet in {tz_name} (it ends at {iso(end)}).", "day_not_ended")
    payouts_by, refunds = await day_movements(conn, day, tz)
    batch_id = new_id("stl")
    payouts = [{"id": new_id("pay"), "merchant_id": m, "amount": a} for m, a in sorted(payouts_by.items())]
    for f in refunds:
        f["id"] = new_id("rfi")
    digest = _digest(key, payouts, refunds)
    totals = {"payouts": sum(p["amount"] for p in payouts), "refunds": sum(f["amount"] for f in refunds)}
    seq = tx.append(
        "settlement_batch",
        batch_id=batch_id,
        date=key,
        timezone=tz_name,
        payouts_total=totals["payouts"],
        payouts_count=len(payouts),
        refunds_total=totals["refunds"],
        refunds_count=len(refunds),
        digest=digest,
    )
    rows = [
        dict(
            id=p["id"],
            batch_id=batch_id,
            kind="payout",
            merchant_id=p["merchant_id"],
            card_id=None,
            amount=p["amount"],
            method=None,
            reference=None,
            status="open",
        )
        for p in payouts
    ]
    rows += [
        dict(
            id=f["id"],
            batch_id=batch_id,
            kind="refund",
            merchant_id=f["merchant_id"],
            card_id=f["card_id"],
            amount=f["amount"],
            method=f["method"],
            reference=f["reference"],
            status="open",
        )
        for f in refunds
    ]
    await repository.insert_batch(
        conn,
        rows,
        id=batch_id,
        date=key,
        payouts_total=totals["payouts"],
        refunds_total=totals["refunds"],
        payouts_count=len(payouts),
        refunds_count=len(refunds),
        digest=digest,
        ledger_seq=seq,
        created_at=tx.now,
    )
    return 201, await batch_out(conn, await repository.batch(conn, batch_id))


def instruction_out(r) -> dict:
    out = {
        "id": r.id,
        "kind": r.kind,
        "merchant_id": r.merchant_id,
        "amount": r.amount,
        "status": r.status,
        "bank_reference": r.bank_reference,
        "reason": r.reason,
        "reported_at": iso(r.reported_at),
    }
    if r.kind == "refund":
        out.update(card_id=r.card_id, method=r.method, reference=r.reference)
    return out


def batch_summary(b) -> dict:
    return {
        "id": b.id,
        "date": b.date,
        "currency": "CNY",
        "created_at": iso(b.created_at),
        "ledger_seq": int(b.ledger_seq),
        "digest": b.digest,
        "totals": {
            "payouts": int(b.payouts_total),
            "refunds": int(b.refunds_total),
            "total": int(b.payouts_total) + int(b.refunds_total),
            "payouts_count": int(b.payouts_count),
            "refunds_count": int(b.refunds_count),
        },
    }


async def batch_out(conn, b) -> dict:
    rows = await repository.instructions_of(conn, b.id)
    out = batch_summary(b)
    out["payouts"] = [instruction_out(r) for r in rows if r.kind == "payout"]
    out["refunds"] = [instruction_out(r) for r in rows if r.kind == "refund"]
    return out


async def load_batch(conn, batch_id: str):
    b = await repository.batch(conn, batch_id)
    if b is None:
        raise NotFound("No such settlement batch.", "settlement_not_found")
    return b


async def report_results(tx: Tx, batch_id: str, results: list) -> dict:
    """The bank's results: executed stays executed; a failed one may later be reported executed."""
    conn = tx.conn
    await load_batch(conn, batch_id)
    ids = [r.instruction_id for r in results]
    if len(set(ids)) != len(ids):
        raise Unprocessable("Each instruction may appear once in a report.", "duplicate_instruction")
    found = await repository.instructions_in_batch(conn, batch_id, ids)
    changed = []
    for r in results:
        inst = found.get(r.instruction_id)
        if inst is None:
            raise NotFound(f"Instruction {r.instruction_id} is not in this batch.", "instruction_not_found")
        same = (
            inst.status == r.status
            and inst.bank_reference == r.bank_reference
            and (r.status == "executed" or inst.reason == r.reason)
        )
        if same:
            continue  # the same report again: nothing to do
        if inst.status == "executed":
            raise Conflict(
                f"Instruction {inst.id} was already reported executed (bank reference "
                f"{inst.bank_reference}); an executed instruction stays executed.",
                "instruction_executed",
            )
        changed.append(r)
    for r in changed:
        await repository.set_result(conn, r.instruction_id, r.status, r.bank_reference, r.reason, tx.now)
    if changed:
        # The free-text reason stays out of the public ledger; the status and the bank's reference go in.
        tx.append(
            "settlement_result",
            batch_id=batch_id,
            results=[
                {"instruction_id": r.instruction_id, "status": r.status, "bank_reference": r.bank_reference}
                for r in changed
            ],
        )
    return await batch_out(conn, await load_batch(conn, batch_id))


def dated_instruction_out(r) -> dict:
    """An instruction read with its batch's date."""
    return {**instruction_out(r), "batch_id": r.batch_id, "date": r.date}


async def list_batches(conn, limit: int, after: str | None) -> dict:
    rows = await repository.batches_page(conn, limit, after)
    return page([batch_summary(b) for b in rows], limit, key="date")


async def list_instructions(conn, statuses: tuple[str, ...], limit: int, after: str | None) -> dict:
    rows = await repository.instructions_page(conn, statuses, limit, after)
    return page([dated_instruction_out(r) for r in rows], limit)


def due_days(now: datetime, tz: ZoneInfo, hour: int) -> list[date]:
    """Days the sweeper should have closed by `now`: yesterday once the local hour is reached, and the
    few days before it (a service that was down catches up)."""
    local = now.astimezone(tz)
    latest = local.date() - timedelta(days=1 if local.hour >= hour else 2)
    return [latest - timedelta(days=k) for k in range(SWEEP_DAYS_BACK)]


async def sweep_due(ctx) -> int:
    """Sweeper: close the due days that have no batch yet and had ledger activity. Returns how many."""
    settings = ctx.settings
    tz = zone(settings.settlement_timezone)
    days = due_days(ctx.clock.now(), tz, settings.settlement_hour)
    async with ctx.engines.reader.connect() as conn:
        have = await repository.closed_days(conn, [d.isoformat() for d in days])
        first = await repository.entry_time(conn, 0)
    if first is None:
        return 0
    closed = 0
    for d in sorted(days):
        if d.isoformat() in have or day_bounds(d, tz)[1] <= first:
            continue  # closed already, or before the ledger's first entry
        status, _ = await ctx.writer.run(lambda tx, d=d: close_day(tx, d, settings.settlement_timezone))
        closed += status == 201
    return closed


async def ledger_totals(conn) -> dict:
    h = await repository.ledger_head(conn)
    if h is None:
        return {"paid_in": 0, "released": 0, "refunded": 0, "escrow": 0}
    return {
        "paid_in": int(h.paid_in),
        "released": int(h.released),
        "refunded": int(h.refunded),
        "escrow": int(h.paid_in) - int(h.released) - int(h.refunded),
    }


async def unsettled(conn) -> int:
    """Amount of open and failed instructions: released or refunded by the ledger, not yet paid by the bank."""
    return await repository.unexecuted_amount(conn)
