"""The event log: what each state change emits, how an event looks, and the wake-up of waiting readers.

An event is written in the same transaction as the change it describes. Operations call `emit`,
which only queues the row on the batch (`tx.batch_state`, so a failed operation drops its events
with its other per-batch state); once per write batch, just before the ledger is flushed, all
queued rows go out as one multi-row INSERT through the batch's deferred raw writes. The money
path never looks at webhook endpoints: the events table is the webhooks' transactional outbox,
and the dispatcher (service/webhooks/) derives each endpoint's deliveries from it.

Writes are serialised (the writer's lock on the ledger head), so `seq` grows in commit order and
is a safe cursor for readers and for the dispatcher. The statements (and who may see which event)
are in repository.py, the event types in event_types.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import orjson

from service.core.clock import iso
from service.core.ids import new_id
from service.db.writer import Tx
from service.event_log import repository


class Signal:
    """Wakes waiters on this replica as soon as a batch with new events commits. Other replicas'
    events are found by polling the table: the wake-up is only an optimisation."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        waiter = self.event
        try:
            await asyncio.wait_for(waiter.wait(), timeout=timeout)
        except TimeoutError:
            pass


new_events = Signal()


def emit(
    tx: Tx,
    type_: str,
    data: dict,
    *,
    merchant_id: str | None = None,
    consumer_id: str | None = None,
    ledger_seq: int | None = None,
) -> None:
    """Queue an event of this operation. `merchant_id` / `consumer_id` say which merchant and which
    consumer may see it (None: neither; regulators and the operator see every event). An event meant
    for an auditor (its own endpoint disabled) carries the auditor's id in `merchant_id`: party ids
    are unique across roles, so no merchant sees it."""
    queued = tx.batch_state.get("events")
    if queued is None:
        queued = tx.batch_state["events"] = []
        tx.batch_state["events_sent"] = 0
    raw = tx.conn.raw
    queued.append(
        (new_id("evt"), type_, raw.t(tx.now), ledger_seq, merchant_id, consumer_id, orjson.dumps(data).decode())
    )
    # Flush after every other per-batch hook: the health codes' hook raises events of its own.
    if not tx.before_flush or tx.before_flush[-1] is not _flush:
        tx.before_flush.append(_flush)


async def _flush(tx: Tx) -> None:
    queued = tx.batch_state.get("events") or []
    sent = tx.batch_state.get("events_sent", 0)
    if len(queued) > sent:
        repository.add_many(tx.conn.raw, queued[sent:])
        tx.batch_state["events_sent"] = len(queued)
        if new_events not in tx.after_commit:
            tx.after_commit.append(new_events)


def event_out(row) -> dict:
    return {
        "id": row.id,
        "cursor": str(row.seq),
        "type": row.type,
        "created_at": iso(row.created_at),
        "ledger_seq": row.ledger_seq,
        "data": orjson.loads(row.data),
    }


async def prune(tx: Tx, retention_days: int, limit: int = 2000) -> int:
    """Sweeper: drop events older than the retention, oldest first, a chunk at a time."""
    cutoff: datetime = tx.now - timedelta(days=retention_days)
    return await repository.prune(tx.conn, cutoff, limit)
