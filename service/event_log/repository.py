"""Every statement on the events table: the write batch's insert, the feed, the newest seq, the
dispatcher's reads of the outbox, pruning.

The insert goes through the writer's raw connection (`tx.conn.raw`, see `service/db/raw.py`): one
text, so a batch's events go out as one multi-row statement with the batch's deferred writes. The
rest is Core, returned as statements where the caller runs them on a connection of its choosing
(the long poll's reader, the webhook dispatcher's sync reader).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, or_, select

from service.db.models import Event
from service.event_log.event_types import AUDITOR_TYPES

events_t = Event.__table__

# A row: (id, type, created_at as `raw.t` binds it, ledger_seq, merchant_id, consumer_id, data as JSON text).
INSERT = (
    "INSERT INTO events (id, type, created_at, ledger_seq, merchant_id, consumer_id, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def add_many(raw, rows: list[tuple]) -> None:
    """The batch's events, in the order of INSERT's columns, through its deferred raw writes."""
    raw.many(INSERT, rows)


# Who sees which events (SPEC §9), one table for the feed's SQL and the dispatcher's fan-out alike: a role
# sees its own rows (matched on one column) and, for some roles, every event of some types; a role not named
# (regulator, operator) sees everything (events carry no consumer's personal data).
_OWN_COLUMN = {"merchant": "merchant_id", "consumer": "consumer_id", "auditor": "merchant_id"}
_EVERY_OF_TYPES: dict[str, tuple[str, ...]] = {"auditor": AUDITOR_TYPES}


def visible_to(stmt, role: str, party_id: str):
    """Restrict a select on events to what the caller may see."""
    column = _OWN_COLUMN.get(role)
    if column is None:
        return stmt
    own = events_t.c[column] == party_id
    types = _EVERY_OF_TYPES.get(role)
    return stmt.where(or_(events_t.c.type.in_(types), own) if types else own)


def may_see(role: str, party_id: str, event) -> bool:
    """The same rule for one event in hand (a row with `type` and the role's own column)."""
    column = _OWN_COLUMN.get(role)
    if column is None:
        return True
    return getattr(event, column) == party_id or event.type in _EVERY_OF_TYPES.get(role, ())


def feed(role: str, party_id: str, after: int | None, limit: int, types: list[str] | None):
    """The caller's events after the cursor (their seq), oldest first."""
    stmt = visible_to(select(events_t), role, party_id).order_by(events_t.c.seq).limit(limit)
    if after is not None:
        stmt = stmt.where(events_t.c.seq > after)
    if types:
        stmt = stmt.where(events_t.c.type.in_(types))
    return stmt


def newest_seq_query():
    """The newest event's seq (0 with none), as a select (use `.scalar_subquery()` inside another)."""
    return select(func.coalesce(func.max(events_t.c.seq), 0))


async def newest_seq(conn) -> int:
    return int((await conn.execute(newest_seq_query())).scalar_one())


def after_seq(low: int, limit: int, *, whole: bool = False):
    """The webhook dispatcher's read of the outbox: events after `low`, oldest first; what fan-out needs
    (seq, id, type, merchant_id), and with `whole` also what a delivery's body is made of."""
    e = events_t
    columns = [e.c.seq, e.c.id, e.c.type, e.c.merchant_id]
    if whole:
        columns += [e.c.created_at, e.c.ledger_seq, e.c.data]
    return select(*columns).where(e.c.seq > low).order_by(e.c.seq).limit(limit)


async def prune(conn, cutoff: datetime, limit: int) -> int:
    """Drop up to `limit` events older than `cutoff`, oldest first; how many went."""
    seqs = [
        r.seq
        for r in (
            await conn.execute(
                select(events_t.c.seq).where(events_t.c.created_at < cutoff).order_by(events_t.c.seq).limit(limit)
            )
        ).all()
    ]
    if seqs:
        await conn.execute(delete(events_t).where(events_t.c.seq <= seqs[-1], events_t.c.created_at < cutoff))
    return len(seqs)
