"""The regulators' alert feed: how an alert looks, and its way from open to acknowledged to resolved."""

from __future__ import annotations

import asyncio

import orjson

from service.alerts import repository
from service.core.clock import iso
from service.db.writer import Tx
from service.health.service import alert_listeners
from service.http.errors import Conflict


class _Signal:
    """Wakes long-polls on this replica as soon as a batch with new alerts commits."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


signal = _Signal()
alert_listeners.append(signal)


def alert_out(a) -> dict:
    return {
        "id": a.id,
        "cursor": str(a.seq),
        "merchant_id": a.merchant_id,
        "kind": a.kind,
        "from_code": a.from_code,
        "to_code": a.to_code,
        "reasons": orjson.loads(a.reasons),
        "status": a.status,
        "finding": a.finding,
        "created_at": iso(a.created_at),
        "acknowledged_at": iso(a.acknowledged_at),
        "resolved_at": iso(a.resolved_at),
        "ledger_seq": a.ledger_seq,
    }


async def move(tx: Tx, alert_id: str, to: str, allowed: tuple[str, ...], finding: str | None = None) -> dict:
    """Acknowledge or resolve (with the finding) an alert in one of the `allowed` states; resolving
    acknowledges it too."""
    a = await repository.get(tx.conn, alert_id)
    if a.status not in allowed:
        raise Conflict(f"The alert is already {a.status}.", "alert_state_conflict")
    stamp = {"acknowledged": "acknowledged_at", "resolved": "resolved_at"}[to]
    values = {stamp: tx.now} if finding is None else {stamp: tx.now, "finding": finding}
    if to == "resolved" and a.acknowledged_at is None:
        values["acknowledged_at"] = tx.now
    await repository.change(tx.conn, alert_id, status=to, **values)
    return alert_out(await repository.get(tx.conn, alert_id))
