"""Every statement the redemption rules make on the redemptions table.

Raw SQL on the writer's connection (`tx.conn.raw`, see `service/db/raw.py`): the ask and the
confirm run as quick operations, which may use nothing else, and each statement keeps one text so a
batch's writes of one kind merge into one statement on PostgreSQL. The rules are in
`service/redemptions/service.py`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from service.db.models import PENDING, Redemption
from service.db.raw import CardRow, RdmRow

redemptions_t = Redemption.__table__

INSERT_PENDING = (
    "INSERT INTO redemptions (id, card_id, merchant_id, consumer_id, status, units, hold_amount, "
    "release_amount, created_at, expires_at, answered_at, ledger_seq) "
    "VALUES (?, ?, ?, ?, 'pending', ?, ?, NULL, ?, ?, NULL, NULL)"
)
SET_VOIDED = "UPDATE redemptions SET status = ?, answered_at = ?, ledger_seq = ? WHERE id = ?"
SET_CONFIRMED = (
    "UPDATE redemptions SET status = 'confirmed', release_amount = ?, answered_at = ?, ledger_seq = ? WHERE id = ?"
)
PENDING_OF_CARD = "SELECT id FROM redemptions WHERE card_id = ? AND status = 'pending'"
OVERDUE = "SELECT id, card_id FROM redemptions WHERE status = 'pending' AND expires_at <= ? ORDER BY expires_at LIMIT ?"


def get(raw, redemption_id: str) -> RdmRow | None:
    return raw.redemption(redemption_id)


def with_card(raw, redemption_id: str) -> tuple[RdmRow, CardRow] | None:
    """The redemption and its card, in one statement (prefetched for a quick run)."""
    return raw.redemption_and_card(redemption_id)


def pending_of_card(raw, card_id: str) -> list[RdmRow]:
    """A card's pending holds, oldest id first."""
    rows = raw.all(PENDING_OF_CARD + " ORDER BY id", (card_id,))
    return [raw.redemption(rid) for (rid,) in rows]


def overdue_of_card(raw, card_id: str, now: datetime) -> list[RdmRow]:
    """A card's pending holds whose time ran out by `now`."""
    rows = raw.all(PENDING_OF_CARD + " AND expires_at <= ?", (card_id, raw.t(now)))
    return [raw.redemption(rid) for (rid,) in rows]


def overdue(raw, now: datetime, limit: int) -> list[tuple[str, str]]:
    """(id, card_id) of up to `limit` pending holds whose time ran out by `now`, soonest first."""
    return [(rid, cid) for rid, cid in raw.all(OVERDUE, (raw.t(now), limit))]


def insert_pending(
    raw,
    redemption_id: str,
    card_id: str,
    merchant_id: str,
    consumer_id: str,
    units: int,
    hold: int,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    raw.run(
        INSERT_PENDING,
        (redemption_id, card_id, merchant_id, consumer_id, units, hold, raw.t(created_at), raw.t(expires_at)),
    )


def set_voided(raw, redemption_id: str, status: str, answered_at: datetime, ledger_seq: int) -> None:
    raw.run(SET_VOIDED, (status, raw.t(answered_at), ledger_seq, redemption_id))


def set_confirmed(raw, redemption_id: str, release: int, answered_at: datetime, ledger_seq: int) -> None:
    raw.run(SET_CONFIRMED, (release, raw.t(answered_at), ledger_seq, redemption_id))


# -- Core, for the routes' reads ------------------------------------------------------------------
async def by_id(conn, redemption_id: str):
    """The redemption row, read outside a write (on the reader)."""
    return (await conn.execute(select(redemptions_t).where(redemptions_t.c.id == redemption_id))).first()


def inbox(consumer_id: str, status: str | None, limit: int, after: str | None):
    """The consumer's redemptions in id order after the cursor (one more than `limit`), as a statement:
    the confirmation inbox reads it again while it long-polls."""
    t = redemptions_t
    stmt = select(t).where(t.c.consumer_id == consumer_id).order_by(t.c.id).limit(limit + 1)
    if status == "pending":  # as the partial index says it (a bound value would not select it)
        stmt = stmt.where(PENDING)
    elif status:
        stmt = stmt.where(t.c.status == status)
    if after:
        stmt = stmt.where(t.c.id > after)
    return stmt
