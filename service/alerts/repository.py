"""Statements on the alerts table: raise one, whether one was raised, the feed after a cursor, one alert, its
state, and the names of the merchants the alerts name."""

from __future__ import annotations

import orjson
from sqlalchemy import insert, select, update

from service.db.models import Alert, Merchant
from service.http.common import read_or_404

alerts_t = Alert.__table__
merchants_t = Merchant.__table__


async def add(conn, row: dict) -> None:
    """A new alert; `row["reasons"]` is a list, stored as JSON."""
    await conn.execute(insert(alerts_t).values({**row, "reasons": orjson.dumps(row["reasons"]).decode()}))


async def exists(conn, kind: str, ledger_seq: int) -> bool:
    """Whether an alert of `kind` was raised for ledger entry `ledger_seq`."""
    stmt = select(alerts_t.c.id).where(alerts_t.c.kind == kind, alerts_t.c.ledger_seq == ledger_seq).limit(1)
    return (await conn.execute(stmt)).first() is not None


def feed(after: int | None, limit: int):
    """Alerts after the cursor (their seq), oldest first."""
    stmt = select(alerts_t).order_by(alerts_t.c.seq).limit(limit)
    return stmt if after is None else stmt.where(alerts_t.c.seq > after)


async def get(conn, alert_id: str):
    return await read_or_404(
        conn, select(alerts_t).where(alerts_t.c.id == alert_id), "No such alert.", "alert_not_found"
    )


async def change(conn, alert_id: str, **values) -> None:
    await conn.execute(update(alerts_t).where(alerts_t.c.id == alert_id).values(**values))


async def merchant_names(conn) -> dict[str, str]:
    """{merchant id: name} of every merchant an alert names, whatever its status now (a defaulted or closed
    merchant has left the public directory but its alerts stay on the regulators' desk)."""
    m = merchants_t.c
    stmt = select(m.id, m.name).where(m.id.in_(select(alerts_t.c.merchant_id).distinct()))
    return {r.id: r.name for r in (await conn.execute(stmt)).all()}
