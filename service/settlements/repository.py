"""Every statement custody makes: settlement batches, their instructions and bank statements, and the
ledger entries, ledger head and card payment routes a day's settlement reads.

The rules are in `service/settlements/service.py` (batches, results) and `statements.py` (matching);
this module only reads and writes rows. Long id lists are sent `IN_CHUNK` at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import func, select, tuple_, update

from service.db.models import BankStatement, Card, LedgerEntry, LedgerHead, SettlementBatch, SettlementInstruction

IN_CHUNK = 500  # values in one statement's IN list

batches_t = SettlementBatch.__table__
instructions_t = SettlementInstruction.__table__
statements_t = BankStatement.__table__
entries_t = LedgerEntry.__table__
head_t = LedgerHead.__table__


async def _in_chunks(conn, values: Sequence, stmt_for: Callable) -> list:
    """The rows of `stmt_for(part)` for each part of `values`, IN_CHUNK values a statement."""
    rows: list = []
    for i in range(0, len(values), IN_CHUNK):
        rows += (await conn.execute(stmt_for(values[i : i + IN_CHUNK]))).all()
    return rows


def _dated_instructions():
    """Instructions with their batch's date."""
    return select(instructions_t, batches_t.c.date).join(batches_t, batches_t.c.id == instructions_t.c.batch_id)


# ---------------------------------------------------------------- the ledger and the cards


async def ledger_head(conn):
    return (await conn.execute(select(head_t).where(head_t.c.id == 1))).first()


async def ledger_size(conn) -> int:
    return int((await conn.execute(select(head_t.c.size).where(head_t.c.id == 1))).scalar() or 0)


async def entry_time(conn, seq: int) -> datetime | None:
    return (await conn.execute(select(entries_t.c.time).where(entries_t.c.seq == seq))).scalar()


async def entries_between(conn, lo: int, hi: int, kinds: tuple[str, ...]) -> list:
    """Entries lo ≤ seq < hi of `kinds`, in seq order."""
    e = entries_t.c
    stmt = (
        select(e.seq, e.kind, e.time, e.canonical, e.card_id, e.merchant_id)
        .where(e.seq >= lo, e.seq < hi, e.kind.in_(kinds))
        .order_by(e.seq)
    )
    return (await conn.execute(stmt)).all()


async def card_routes(conn, card_ids: list[str]) -> dict[str, tuple[str, str]]:
    """card id -> (payment method, payment reference)."""
    c = Card.__table__.c
    rows = await _in_chunks(
        conn,
        sorted(set(card_ids)),
        lambda part: select(c.id, c.payment_method, c.payment_reference).where(c.id.in_(part)),
    )
    return {r.id: (r.payment_method, r.payment_reference) for r in rows}


async def cards_by_route(conn, pairs: list[tuple], references: list[str]) -> list:
    """Cards paid by one of the (method, reference) `pairs` (the unique payment index answers these), or
    carrying one of the bare `references`: id, price, payment route, purchase_seq. A card may come twice."""
    c = Card.__table__.c
    cols = (c.id, c.price, c.payment_method, c.payment_reference, c.purchase_seq)
    by_pair = await _in_chunks(
        conn, pairs, lambda part: select(*cols).where(tuple_(c.payment_method, c.payment_reference).in_(part))
    )
    return by_pair + await _in_chunks(conn, references, lambda part: select(*cols).where(c.payment_reference.in_(part)))


# ---------------------------------------------------------------- batches and instructions


async def batch(conn, batch_id: str):
    return (await conn.execute(select(batches_t).where(batches_t.c.id == batch_id))).first()


async def batch_on(conn, day: str):
    return (await conn.execute(select(batches_t).where(batches_t.c.date == day))).first()


async def closed_days(conn, days: list[str]) -> set[str]:
    """Which of `days` (YYYY-MM-DD) have a batch."""
    return {r[0] for r in (await conn.execute(select(batches_t.c.date).where(batches_t.c.date.in_(days)))).all()}


async def batch_ids_between(conn, date_from: str, date_to: str) -> list[str]:
    stmt = select(batches_t.c.id).where(batches_t.c.date >= date_from, batches_t.c.date <= date_to)
    return [r.id for r in (await conn.execute(stmt)).all()]


async def insert_batch(conn, instructions: list[dict], **values) -> None:
    await conn.execute(batches_t.insert().values(**values))
    if instructions:
        await conn.execute(instructions_t.insert(), instructions)


async def batches_page(conn, limit: int, after: str | None) -> list:
    """Up to `limit` + 1 batches after the date `after`, in date order."""
    stmt = select(batches_t).order_by(batches_t.c.date).limit(limit + 1)
    if after:
        stmt = stmt.where(batches_t.c.date > after)
    return (await conn.execute(stmt)).all()


async def instructions_of(conn, batch_id: str) -> list:
    stmt = select(instructions_t).where(instructions_t.c.batch_id == batch_id).order_by(instructions_t.c.id)
    return (await conn.execute(stmt)).all()


async def instructions_in_batch(conn, batch_id: str, ids: list[str]) -> dict:
    """id -> instruction, for those of `ids` in the batch."""
    i = instructions_t.c
    rows = await _in_chunks(
        conn, ids, lambda part: select(instructions_t).where(i.batch_id == batch_id, i.id.in_(part))
    )
    return {r.id: r for r in rows}


async def set_result(
    conn, instruction_id: str, status: str, bank_reference: str | None, reason: str | None, reported_at: datetime
) -> None:
    await conn.execute(
        update(instructions_t)
        .where(instructions_t.c.id == instruction_id)
        .values(status=status, bank_reference=bank_reference, reason=reason, reported_at=reported_at)
    )


async def instructions_page(conn, statuses: tuple[str, ...], limit: int, after: str | None) -> list:
    """Up to `limit` + 1 instructions in `statuses` after the id `after`, by id, each with its batch's date."""
    stmt = (
        _dated_instructions()
        .where(instructions_t.c.status.in_(statuses))
        .order_by(instructions_t.c.id)
        .limit(limit + 1)
    )
    if after:
        stmt = stmt.where(instructions_t.c.id > after)
    return (await conn.execute(stmt)).all()


async def dated_instructions_of_batches(conn, batch_ids: list[str]) -> dict:
    """id -> instruction with its batch's date, for every instruction of the batches."""
    rows = await _in_chunks(
        conn, batch_ids, lambda part: _dated_instructions().where(instructions_t.c.batch_id.in_(part))
    )
    return {r.id: r for r in rows}


async def dated_instructions(conn, ids: list[str]) -> dict:
    """id -> instruction with its batch's date, for those of `ids` that exist."""
    rows = await _in_chunks(conn, ids, lambda part: _dated_instructions().where(instructions_t.c.id.in_(part)))
    return {r.id: r for r in rows}


async def unexecuted_instructions(conn, limit: int) -> list:
    """The first `limit` open or failed instructions by id, each with its batch's date."""
    stmt = _dated_instructions().where(instructions_t.c.status != "executed").order_by(instructions_t.c.id)
    return (await conn.execute(stmt.limit(limit))).all()


async def unexecuted_amount(conn) -> int:
    """Fen of the open and failed instructions."""
    total = func.coalesce(func.sum(instructions_t.c.amount), 0)
    return int((await conn.execute(select(total).where(instructions_t.c.status != "executed"))).scalar())


# ---------------------------------------------------------------- bank statements


async def insert_statement(conn, **values) -> None:
    await conn.execute(statements_t.insert().values(**values))


async def statement_result(conn, statement_id: str) -> str | None:
    """The stored answer (JSON text) of a statement."""
    stmt = select(statements_t.c.result).where(statements_t.c.id == statement_id)
    return (await conn.execute(stmt)).scalar()
