"""One writer per process: waiting write requests are committed together in one transaction.

A request hands its operation (an async function of a `Tx`) to the writer and waits. The writer
takes every operation waiting, opens one transaction, locks the ledger head (so replicas on one
PostgreSQL serialise their batches, and SQLite's `BEGIN IMMEDIATE` does the same across
processes), runs each operation in its own savepoint (one failing operation rolls back alone),
appends the batch's ledger entries to the hash chain and the Merkle tree, and commits. Only then
is each request answered: every answer the client sees is durable and chained.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.canonical import canonical_json
from ledger.hashing import GENESIS_HEAD, chain_hash, leaf_hash
from ledger.merkle import Frontier, frontier_node_ids
from service.clock import Clock, iso
from service.db.models import LedgerEntry, LedgerHead, MerkleNode
from service.errors import Conflict, EscrowError, Unavailable

log = logging.getLogger("escrow.writer")

entries_t = LedgerEntry.__table__
head_t = LedgerHead.__table__
nodes_t = MerkleNode.__table__


@dataclass
class PendingEntry:
    seq: int
    kind: str
    time: datetime
    fields: dict


@dataclass
class Tx:
    """What an operation sees: the connection, the batch's time, and the ledger to append to."""
    conn: AsyncConnection
    now: datetime
    next_seq: int
    entries: list[PendingEntry] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def append(self, kind: str, **fields: Any) -> int:
        """Add a ledger entry to this transaction; returns its sequence number."""
        seq = self.next_seq + len(self.entries)
        self.entries.append(PendingEntry(seq, kind, self.now, fields))
        return seq


Op = Callable[[Tx], Awaitable[Any]]


class Writer:
    def __init__(self, engine: AsyncEngine, clock: Clock, is_sqlite: bool, max_batch: int = 256):
        self.engine = engine
        self.clock = clock
        self.is_sqlite = is_sqlite
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Op, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._frontier: Frontier | None = None
        self._frontier_head: bytes | None = None
        self.batches = 0
        self.ops = 0

    def _ensure_started(self) -> asyncio.Queue:
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="escrow-writer")
        assert self._queue is not None
        return self._queue

    async def run(self, op: Op) -> Any:
        queue = self._ensure_started()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await queue.put((op, fut))
        return await fut

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    def forget_state(self) -> None:
        """Drop cached ledger state (tests reset the database under a live app)."""
        self._frontier = None
        self._frontier_head = None

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [(op, fut) for op, fut in batch if not fut.cancelled()]
            if not batch:
                continue
            try:
                results = await self._run_batch(batch)
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(Unavailable("The service is shutting down; nothing was changed."))
                raise
            except Exception as exc:  # the commit itself failed: nothing in the batch happened
                log.exception("write batch failed")
                self.forget_state()
                results = [(False, Unavailable("The database did not accept the write; nothing was changed. Retry with the same Idempotency-Key.", "write_failed"))] * len(batch)
                if isinstance(exc, EscrowError):
                    results = [(False, exc)] * len(batch)
            for (_, fut), (ok, value) in zip(batch, results):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    async def _run_batch(self, batch: list[tuple[Op, asyncio.Future]]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        callbacks: list[Callable[[], None]] = []
        async with self.engine.connect() as conn:
            async with conn.begin():
                await self.clock.refresh(conn)
                size, head = await self._lock_head(conn)
                frontier = await self._load_frontier(conn, size, head)
                tx = Tx(conn=conn, now=self.clock.now(), next_seq=size)
                for op, _ in batch:
                    mark = len(tx.entries)
                    cb_mark = len(tx.after_commit)
                    try:
                        async with conn.begin_nested():
                            value = await op(tx)
                        results.append((True, value))
                    except EscrowError as exc:
                        del tx.entries[mark:]
                        del tx.after_commit[cb_mark:]
                        results.append((False, exc))
                    except IntegrityError as exc:
                        del tx.entries[mark:]
                        del tx.after_commit[cb_mark:]
                        log.warning("operation refused by a database constraint: %s", exc.orig)
                        results.append((False, Conflict("The change conflicts with the current state; nothing was changed.", "constraint_violation")))
                    except DBAPIError:
                        raise
                    except Exception as exc:
                        del tx.entries[mark:]
                        del tx.after_commit[cb_mark:]
                        log.exception("operation failed")
                        results.append((False, exc))
                new_head = await self._flush_ledger(conn, tx, frontier, head)
                callbacks = tx.after_commit
        self._frontier, self._frontier_head = frontier, new_head
        self.batches += 1
        self.ops += len(batch)
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("after-commit callback failed")
        return results

    async def _lock_head(self, conn: AsyncConnection) -> tuple[int, bytes]:
        stmt = select(head_t.c.size, head_t.c.head).where(head_t.c.id == 1)
        if not self.is_sqlite:
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).first()
        if row is None:
            await conn.execute(insert(head_t).values(id=1, size=0, head=GENESIS_HEAD, paid_in=0, released=0,
                                                     refunded=0, held=0))
            return 0, GENESIS_HEAD
        return int(row.size), bytes(row.head)

    async def _load_frontier(self, conn: AsyncConnection, size: int, head: bytes) -> Frontier:
        if self._frontier is not None and self._frontier.size == size and self._frontier_head == head:
            return self._frontier  # mutated in place; a failed batch calls forget_state()
        ids = frontier_node_ids(size)
        nodes: dict[tuple[int, int], bytes] = {}
        if ids:
            rows = await conn.execute(
                select(nodes_t.c.level, nodes_t.c.idx, nodes_t.c.hash).where(
                    or_(*[and_(nodes_t.c.level == lv, nodes_t.c.idx == ix) for lv, ix in ids])))
            nodes = {(int(r.level), int(r.idx)): bytes(r.hash) for r in rows}
        return Frontier.from_nodes(size, nodes)

    async def _flush_ledger(self, conn: AsyncConnection, tx: Tx, frontier: Frontier, head: bytes) -> bytes:
        if not tx.entries:
            return head
        entry_rows = []
        node_rows = []
        paid_in = released = refunded = held = 0
        for e in tx.entries:
            f = e.fields
            if e.kind == "purchase":
                paid_in += f["amount"]
            elif e.kind == "release":
                released += f["amount"]
            elif e.kind == "refund":
                refunded += f["amount"]
                released += f["merchant_share"]
            held += f.get("held_delta", 0)
            body = {"seq": e.seq, "time": iso(e.time), "kind": e.kind, **e.fields}
            text = canonical_json(body)
            leaf = leaf_hash(text)
            head = chain_hash(head, leaf)
            entry_rows.append({
                "seq": e.seq, "kind": e.kind, "time": e.time, "canonical": text.decode(),
                "leaf_hash": leaf, "chain_hash": head, "card_id": e.fields.get("card_id"),
                "merchant_id": e.fields.get("merchant_id"), "consumer_id": e.fields.get("consumer_id"),
            })
            for level, index, h in frontier.append(leaf):
                node_rows.append({"level": level, "idx": index, "hash": h})
        await conn.execute(insert(entries_t), entry_rows)
        await conn.execute(insert(nodes_t), node_rows)
        await conn.execute(update(head_t).where(head_t.c.id == 1).values(
            size=tx.next_seq + len(tx.entries), head=head, paid_in=head_t.c.paid_in + paid_in,
            released=head_t.c.released + released, refunded=head_t.c.refunded + refunded, held=head_t.c.held + held))
        return head
