"""One writer per process: waiting write requests are committed together in one transaction.

A request hands its operation (an async function of a `Tx`) to the writer and waits. The writer
takes every operation waiting, opens one transaction, locks the ledger head (so replicas on one
PostgreSQL serialise their batches, and SQLite's `BEGIN IMMEDIATE` does the same across
processes), runs each operation in its own savepoint (one failing operation rolls back alone),
appends the batch's ledger entries to the hash chain and the Merkle tree, and commits. Only then
is each request answered: every answer the client sees is durable and chained.

The writer runs on its own thread with its own event loop and a synchronous database connection.
Operations keep their `await tx.conn.execute(...)` shape (the connection is an async facade whose
calls complete at once), but no statement pays a hop between threads: the HTTP loop and the
writer meet once per batch.

Operations that say in advance what they read (`QuickOp`: the redemptions' ask and answer, with
or without an Idempotency-Key) go the quick way: a run of them in the batch has those rows (cards,
redemptions, idempotency keys) read in one statement, its writes deferred and sent together (see
`service.db.raw`), and an operation that fails drops its queued writes instead of rolling back to a
savepoint. Other operations go the careful way, one savepoint each; the batch keeps its arrival
order throughout. If anything in a quick run goes wrong that dropping cannot undo (a database
error, an operation failing after its writes went out), the transaction is rolled back and the
whole batch runs again the careful way, so every operation gets exactly the answer it would have
had alone. See `Writer` for how often an operation may run and what it may touch.

Requests whose Idempotency-Key is already stored (retries) are answered before the batch waits for
the ledger head: the batch's keys are read in one statement first (on PostgreSQL with the head
taken only if it is free, `SKIP LOCKED`, and the first run's other reads), and not read again under
the lock when that read still holds (see `Writer._early_replays`).

On PostgreSQL a quick batch makes three round trips, with keys or without: the head lock with the
first run's reads (and its keys), the run's writes with the health-code read, and the ledger's
writes with the COMMIT (one more when another replica's batch holds the head). The run's writes do
not wait for the run's end: every SHIP_AT queued writes, those of finished operations go out
(`Raw.ship`) and PostgreSQL executes them while the next operations are computed; the health-code
read then waits for all of them. The BEGIN goes in the first of them (`Raw.begin_with_first_statement`:
psycopg would send it alone, one more round trip). The pool does not ping the connection at checkout; a batch whose first
statements find it dead (the database restarted) has sent nothing and runs again on a new
connection.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledger.canonical import canonical_json
from ledger.hashing import GENESIS_HEAD, chain_hash, leaf_hash
from ledger.merkle import Frontier, frontier_node_ids
from ledger.totals import add_entry, new_totals
from service.core.clock import Clock, iso
from service.db.models import LedgerEntry, LedgerHead, MerkleNode
from service.db.raw import Raw
from service.http.errors import Conflict, EscrowError, Unavailable, Unprocessable

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


class TxConnection:
    """An async-shaped facade over the writer thread's synchronous connection."""

    __slots__ = ("_conn", "dialect", "raw")

    def __init__(self, conn: Connection, raw: Raw | None = None):
        self._conn = conn
        self.dialect = conn.dialect
        self.raw = raw or Raw(conn.connection.dbapi_connection, conn.dialect.name == "postgresql")

    async def execute(self, statement, parameters=None):
        self.raw.live()
        if parameters is None:
            return self._conn.execute(statement)
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(self, sql: str, parameters=None):
        self.raw.live()
        return (
            self._conn.exec_driver_sql(sql, parameters) if parameters is not None else self._conn.exec_driver_sql(sql)
        )

    async def stream(self, statement, parameters=None):
        return _SyncStream(await self.execute(statement, parameters))

    def begin_nested(self) -> _Savepoint:
        self.raw.live()
        return _Savepoint(self._conn)


class _SyncStream:
    """`async for` over a synchronous result, as AsyncConnection.stream() gives."""

    def __init__(self, result):
        self._result = result

    def __aiter__(self):
        return self

    async def __anext__(self):
        row = self._result.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    async def partitions(self, size: int | None = None):
        while True:
            rows = self._result.fetchmany(size or 1000)
            if not rows:
                return
            yield rows

    async def close(self) -> None:
        self._result.close()


class _Savepoint:
    __slots__ = ("_conn", "_tx")

    def __init__(self, conn: Connection):
        self._conn = conn

    async def __aenter__(self):
        self._tx = self._conn.begin_nested()
        return self._tx

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._tx.commit()
        else:
            self._tx.rollback()
        return False


@dataclass
class Tx:
    """What an operation sees: the connection, the batch's time, and the ledger to append to."""

    conn: TxConnection
    now: datetime
    next_seq: int
    entries: list[PendingEntry] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)  # run on the requester's loop
    risk_events: bool = True  # health codes follow the money events (ESCROW_RISK_INCREMENTAL; off only in benchmarks)

    # Per-batch hooks (the risk module's counters): state that a failed operation must roll back,
    # and work done once per batch just before the ledger is flushed.
    batch_state: dict[str, Any] = field(default_factory=dict)
    before_flush: list[Callable[[Tx], Awaitable[None]]] = field(default_factory=list)

    def mark_hooks(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.batch_state.items() if isinstance(v, list)}

    def rollback_hooks(self, marks: dict[str, int]) -> None:
        for k, v in self.batch_state.items():
            if isinstance(v, list):
                del v[marks.get(k, 0) :]

    async def run_before_flush(self) -> None:
        for hook in self.before_flush:
            await hook(self)

    def append(self, kind: str, **fields: Any) -> int:
        """Add a ledger entry to this transaction; returns its sequence number."""
        seq = self.next_seq + len(self.entries)
        self.entries.append(PendingEntry(seq, kind, self.now, fields))
        return seq


Op = Callable[[Tx], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Reads:
    """What a quick operation will read first: one card (with its merchant's status) or one
    redemption (with its card), and the Idempotency-Key it is sent under, as (caller, key)."""

    card: str | None = None
    redemption: str | None = None
    key: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class QuickOp:
    """An operation that goes the quick way through a batch.

    Its contract, checked where it can be: it reads first what `reads` declares (served from one
    statement for the whole run, or read on its own when another operation of the run touches the
    same row); it talks to the database only through `tx.conn.raw` (SQLAlchemy raises
    `QuickContractBroken` while it runs); it never asks for a row count (under deferral `raw.run`
    has none: asking raises `DeferredRowCount`). With `reads.key`, `replay` turns the stored
    answer of that key, `(request_hash, status_code, response_body)`, into the operation's result
    (or raises, e.g. 409 for another body): the writer calls it for keys it finds before taking the
    ledger head, and those requests are answered at once.

    To add a write to a quick operation: one more `tx.conn.raw.run(sql, params)` (or
    `raw.many(sql, rows)`) with `?` placeholders. It queues, goes out with the run's other writes
    (row writes of one statement text merged into one multi-row INSERT or UPDATE on PostgreSQL),
    and is dropped with the rest of the operation's writes if it fails."""

    fn: Op
    reads: Reads
    replay: Callable[[tuple], Any] | None = None

    def __call__(self, tx: Tx) -> Awaitable[Any]:
        return self.fn(tx)


AnyOp = Op | QuickOp


def _reads_of(op: AnyOp) -> Reads | None:
    return op.reads if type(op) is QuickOp else None


class _Careful(Exception):
    """The quick way cannot give this batch its exact answers: run it again the careful way."""


class _Stale(Exception):
    """The writer's connection died while it was idle (e.g. the database restarted); the batch
    had sent nothing yet."""


_DB_ERRORS: tuple = (DBAPIError,)


class _Batch:
    """The state of one attempt at a batch, shared by its steps."""

    __slots__ = ("items", "ops", "reads", "results", "run_end", "in_run", "conn", "raw", "tx", "dbapi", "dbapi_errors")

    def __init__(self, items: list, quick: bool):
        self.items = items  # (op, future, loop), in arrival order
        self.ops: list[AnyOp] = []
        self.reads: list[Reads | None] | None = None  # per operation, None when the batch has no quick op
        self.results: list[tuple[bool, Any]] = []
        self.run_end = 0  # the operations before run_end had their reads made
        self.in_run = False  # the last operation ran inside a quick run
        self.take(items, quick, start=0)

    def take(self, items: list, quick: bool, start: int) -> None:
        """Add `items` (already in self.items from `start`) to the operations."""
        ops = [op for op, _, _ in items]
        self.ops.extend(ops)
        self.results.extend([(False, None)] * len(ops))
        if not quick:
            return
        reads = [_reads_of(op) for op in ops]
        if self.reads is not None:
            self.reads.extend(reads)
        elif any(reads):
            self.reads = [None] * start + reads


class Writer:
    """The process's one writer thread and its queue.

    Re-runs. An operation may run up to four times before its answer: the quick way, the quick
    way again on a new connection (the pooled one was found dead before anything was sent), the
    careful way (the quick way could not give exact answers), and the careful way again on a new
    connection. Every run but the last is rolled back, so an operation's database writes, ledger
    entries, `batch_state` and `after_commit` callbacks count once; anything else it does happens
    once per run.

    The side-effect rule. An operation changes nothing outside its transaction: no network, no
    files, no in-memory state beyond `tx` (use `tx.batch_state` for per-batch counters: it is
    rolled back with the operation). What must happen outside goes in `tx.after_commit` and runs
    on the requester's loop once the batch has committed, never for a run that was rolled back.
    """

    def __init__(self, engine: Engine, clock: Clock, is_sqlite: bool, max_batch: int, risk_events: bool = True):
        self.engine = engine
        self.risk_events = risk_events
        self.clock = clock
        self.is_sqlite = is_sqlite
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._frontier: Frontier | None = None
        self._frontier_head: bytes | None = None
        self._stopping = False
        self._watch: threading.Condition | None = None  # test hooks: see gather() and wait_queued()
        self._gather = 0
        self.batches = 0
        self.enqueued = 0  # operations ever queued (tests wait on it to order their requests)
        self.ops = 0
        self.quick_batches = 0  # batches that ran the quick way (prefetched reads, deferred writes)
        self.careful_retries = 0  # of those, how many had to run again the careful way
        self.reconnects = 0  # batches that found the connection dead and ran on a new one
        self.early_replays = 0  # requests answered from a stored Idempotency-Key before the head was locked

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._thread_main, name="escrow-writer", daemon=True)
                self._thread.start()

    async def run(self, op: AnyOp) -> Any:
        self._ensure_started()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self.enqueued += 1
        self._queue.put((op, fut, loop))
        if self._watch is not None:
            with self._watch:
                self._watch.notify_all()
        return await fut

    async def stop(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            await asyncio.to_thread(thread.join, 10)
        self._thread = None

    def forget_state(self) -> None:
        """Drop cached ledger state (tests reset the database under a live app)."""
        self._frontier = None
        self._frontier_head = None

    # -- test hooks ---------------------------------------------------------------------------------
    def wait_queued(self, n: int, timeout: float = 10.0) -> bool:
        """Block (a thread, not the loop) until at least `n` operations wait in the queue."""
        watch = self._watching()
        with watch:
            return watch.wait_for(lambda: self._queue.qsize() >= n, timeout)

    def gather(self, n: int) -> None:
        """The next batch starts only once `n` operations are queued (then it takes them all, up to
        `max_batch`): a test's requests share one batch however the threads are scheduled."""
        self._watch = self._watch or threading.Condition()
        self._gather = n

    def _watching(self):
        self._watch = self._watch or threading.Condition()
        return self._watch

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._stopping = False
        try:
            while not self._stopping:
                first = self._queue.get()
                if first is None:
                    return
                if self._gather:
                    n, self._gather = self._gather, 0
                    self.wait_queued(n - 1)
                self._process(loop, [first])
        finally:
            loop.close()

    # -- one batch ----------------------------------------------------------------------------------
    def _drain(self, room: int) -> list:
        """What waits in the queue now, up to `room` requests (the rest stay queued for the next
        batch), leaving out requests whose callers gave up."""
        items: list = []
        while len(items) < room:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stopping = True
                break
            if not item[1].cancelled():
                items.append(item)
        return items

    def _process(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        try:
            results = None
            try:
                results, callbacks = self._attempt(loop, batch, quick=True)
            except _Careful:
                self.forget_state()
                self.careful_retries += 1
            if results is None:
                results, callbacks = self._attempt(loop, batch, quick=False)
        except Exception as exc:  # the commit itself failed: nothing in the batch happened
            log.exception("write batch failed")
            self.forget_state()
            error = (
                exc
                if isinstance(exc, EscrowError)
                else Unavailable(
                    "The database did not accept the write; nothing was changed. Retry with the same Idempotency-Key.",
                    "write_failed",
                )
            )
            results, callbacks = [(False, error)] * len(batch), []
        _answer(batch, results, callbacks)

    def _attempt(self, loop: asyncio.AbstractEventLoop, batch: list, quick: bool):
        """Run the batch; once more on a new connection if the pooled one turns out dead before the
        batch sent anything (the pool does not ping: a ping would cost every batch a round trip)."""
        try:
            return loop.run_until_complete(self._run_batch(batch, quick))
        except _Stale as exc:
            log.warning("the writer's database connection had gone (%s); reconnected", exc.__cause__)
            self.forget_state()
            self.reconnects += 1
            return loop.run_until_complete(self._run_batch(batch, quick))

    async def _run_batch(self, batch: list, quick: bool) -> tuple[list[tuple[bool, Any]], list[Callable[[], None]]]:
        """Run a batch in one transaction, in arrival order: drain, early replays, lock, the
        operations (each quick run with its reads made in one statement and its writes deferred; the
        others, all of them without `quick`, one savepoint each), ledger flush and commit. The first
        attempt takes in what waits in the queue before it locks the ledger head, and again after
        (what arrived while another replica's batch held it). `batch` is updated in place: the
        caller answers what it holds."""
        with self.engine.connect() as sync_conn:
            try:
                raw = Raw(sync_conn.connection.dbapi_connection, not self.is_sqlite)
            except Exception as exc:  # e.g. SQLite's connection closed under the pool: run again on a new one
                _check_stale(sync_conn, exc)
                raise
            try:
                return await self._run_batch_on(sync_conn, raw, batch, quick)
            finally:
                raw.end_batch()

    async def _run_batch_on(
        self, sync_conn: Connection, raw: Raw, batch: list, quick: bool
    ) -> tuple[list[tuple[bool, Any]], list[Callable[[], None]]]:
        if not self.is_sqlite:
            raw.begin_with_first_statement()  # PostgreSQL: no round trip for BEGIN alone
        if quick:
            batch.extend(self._drain(self.max_batch - len(batch)))
            early = self._early_replays(sync_conn, raw, batch)
            if not batch:
                raw.rollback()  # PostgreSQL: the head may have been locked with the keys' read
                return [], []
        else:
            early = _NOTHING_EARLY
        b = _Batch(list(batch), quick)
        b.dbapi = sync_conn.dialect.loaded_dbapi
        b.dbapi_errors = (*_DB_ERRORS, b.dbapi.Error)
        try:
            transaction = sync_conn.begin()  # SQLite: BEGIN IMMEDIATE
        except b.dbapi_errors as exc:
            _check_stale(sync_conn, exc)
            raise
        with transaction:
            b.conn = TxConnection(sync_conn, raw)
            b.raw = raw
            size, head = await self._lock_step(sync_conn, b, early)
            frontier = await self._load_frontier(b.conn, size, head)
            b.tx = Tx(conn=b.conn, now=self.clock.now(), next_seq=size, risk_events=self.risk_events)
            if quick and len(batch) < self.max_batch:
                # What arrived while this batch waited for the head (another replica's batch) rides along.
                late = self._drain(self.max_batch - len(batch))
                batch.extend(late)
                b.items.extend(late)
                b.take(late, quick, start=len(b.ops))
            for i in range(len(b.ops)):
                b.results[i] = await self._run_op(b, i)
            new_head = await self._flush(b, frontier, head)
            callbacks = b.tx.after_commit
        self._frontier, self._frontier_head = frontier, new_head
        self.batches += 1
        self.ops += len(b.ops)
        if b.reads is not None:
            self.quick_batches += 1
        return b.results, callbacks

    def _early_replays(self, sync_conn: Connection, raw: Raw, batch: list) -> _Early:
        """Answer, before the batch waits for the ledger head, the requests whose Idempotency-Key is
        already stored (a retry of an answered request), all keys read with one statement; they leave
        the batch. A retry never waits for another batch, here or on another replica.

        What this read learnt is kept when it still holds under the lock, so that the keys are not
        read twice: on PostgreSQL the read goes with `FOR UPDATE SKIP LOCKED` on the ledger head and
        the first run's cards and redemptions (one round trip); when it got the head, every read of
        the pipeline was made under the lock and the lock step has nothing left to do. On SQLite the
        keys not found stay not found if `PRAGMA data_version`, read before them, has not moved once
        the batch holds the write lock (no other connection committed in between). Otherwise the
        keys not found are read again under the lock, with the run's other reads."""
        keyed = [
            (i, r.key)
            for i, (op, _, _) in enumerate(batch)
            if (r := _reads_of(op)) is not None and r.key is not None and op.replay is not None
        ]
        if not keyed:
            return _NOTHING_EARLY
        keys = [k for _, k in keyed]
        early = _Early()
        try:
            if self.is_sqlite:
                early.version = raw.data_version()
                stored = raw.stored_keys(keys)
                early.absent = frozenset(k for k in keys if k not in stored)
            else:
                run = [r for r in (_reads_of(op) for op, _, _ in batch[: _first_run_end(batch)]) if r is not None]
                cards, rdms, _ = _run_ids(run)
                rows = raw.prefetch(cards, rdms, keys, lead=_LOCK_HEAD_PG_SKIP_LOCKED)
                stored = raw.found_keys()
                if rows:  # the head was free: it is this batch's now, and so is every read above
                    size, head = rows[0]
                    early.head = (int(size), bytes(head))
                else:  # another replica's batch holds it (or there is none yet): read again under it
                    raw.forget_prefetch()
        except Exception as exc:
            _check_stale(sync_conn, exc)  # a dead connection: the batch runs again on a new one
            log.debug("early read of idempotency keys failed", exc_info=True)
            try:
                raw.rollback()
            except Exception:
                pass
            return _NOTHING_EARLY
        if not stored:
            return early
        answered: list[tuple[Any, tuple[bool, Any]]] = []
        for i, key in keyed:
            row = stored.get(key)
            if row is None:
                continue
            try:
                answered.append((batch[i], (True, batch[i][0].replay(row))))
            except Exception as exc:
                answered.append((batch[i], (False, exc)))
        done = {id(item) for item, _ in answered}
        batch[:] = [item for item in batch if id(item) not in done]
        self.early_replays += len(answered)
        _answer([item for item, _ in answered], [result for _, result in answered], [])
        return early

    async def _lock_step(self, sync_conn: Connection, b: _Batch, early: _Early) -> tuple[int, bytes]:
        """Read the test clock's offset and lock the ledger head; the first quick run's reads go with
        the lock (unless the early read already took the head with them). Only reads go out here: a
        connection found dead can be replaced."""
        first_run: list[Reads] = []
        if b.reads is not None and b.reads[0] is not None:
            b.run_end = _run_end(b.reads, 0)
            first_run = b.reads[: b.run_end]
        try:
            await self.clock.refresh(b.conn)
            if early.head is not None:
                found = early.head  # (the first run's reads were made with it: a part of the early run's)
            else:
                absent = early.absent if early.absent and b.raw.data_version() == early.version else frozenset()
                found = await self._lock_head(b.conn, first_run, absent)
        except b.dbapi_errors as exc:
            _check_stale(sync_conn, exc)
            if first_run:
                raise _Careful from exc
            raise
        if first_run:
            b.raw.defer()
        return found

    async def _run_op(self, b: _Batch, i: int) -> tuple[bool, Any]:
        """Operation i: a quick run starts (its reads are made) or ends (its writes go out) here, then
        the operation runs the quick way or in a savepoint."""
        raw, tx = b.raw, b.tx
        wants_quick = b.reads is not None and b.reads[i] is not None
        try:
            if wants_quick and i >= b.run_end:  # a quick run starts: read what it will read
                b.run_end = _run_end(b.reads, i)
                run = b.reads[i : b.run_end]
                # (what an earlier quick run queued goes out with these reads)
                raw.prefetch(*_run_ids(run))
                raw.defer()
            elif b.in_run and not wants_quick:  # it is over: send its writes, go on carefully
                raw.stop_deferring()
        except b.dbapi_errors as exc:  # e.g. an id PostgreSQL cannot compare
            raise _Careful from exc
        b.in_run = quick = wants_quick
        mark, cb_mark, hooks_mark = len(tx.entries), len(tx.after_commit), tx.mark_hooks()
        if quick:
            write_mark = raw.mark()
            raw.quick_op = True
        else:
            raw.run("SAVEPOINT op")  # one failing operation rolls back alone
        try:
            value = await b.ops[i](tx)
            if quick:
                raw.ship()  # PostgreSQL: once enough have queued, finished writes go out while the run goes on
            else:
                raw.run("RELEASE SAVEPOINT op")
            return True, value
        except b.dbapi_errors as exc:
            if quick:
                raise _Careful from exc
            error: Exception = _refusal(exc, b.dbapi)
        except Exception as exc:
            if quick and not raw.discard_since(write_mark):
                raise _Careful from exc
            if not isinstance(exc, EscrowError):
                log.exception("operation failed")
            error = exc
        finally:
            raw.quick_op = False
        if not quick:
            raw.run("ROLLBACK TO SAVEPOINT op")
            raw.run("RELEASE SAVEPOINT op")
        del tx.entries[mark:]
        del tx.after_commit[cb_mark:]
        tx.rollback_hooks(hooks_mark)
        return False, error

    async def _flush(self, b: _Batch, frontier: Frontier, head: bytes) -> bytes:
        """The batch's once-a-batch hooks, its ledger entries and the COMMIT (on PostgreSQL the last
        writes carry it). A database error here in a quick batch: run it again carefully."""
        try:
            await b.tx.run_before_flush()
            new_head = await self._flush_ledger(b.conn, b.tx, frontier, head)
            b.raw.flush(commit=True)
        except b.dbapi_errors as exc:
            if b.reads is not None:
                raise _Careful from exc
            raise
        return new_head

    async def _lock_head(
        self, conn: TxConnection, run: list[Reads], absent: frozenset = frozenset()
    ) -> tuple[int, bytes]:
        """Lock the ledger head (replicas on one PostgreSQL take turns here; SQLite's BEGIN IMMEDIATE
        already did) and read it, together with the reads of `run`, the batch's first quick run
        (but for the keys in `absent`, known not to be stored)."""
        raw = conn.raw
        lock = _LOCK_HEAD_SQLITE if self.is_sqlite else _LOCK_HEAD_PG
        if run:
            rows = raw.prefetch(*_run_ids(run), lead=lock, absent=absent)
        else:
            rows = raw.reads([(lock, ())])[0]
        if not rows:
            await conn.execute(
                insert(head_t).values(id=1, size=0, head=GENESIS_HEAD, paid_in=0, released=0, refunded=0, held=0)
            )
            return 0, GENESIS_HEAD
        size, head = rows[0]
        return int(size), bytes(head)

    async def _load_frontier(self, conn: TxConnection, size: int, head: bytes) -> Frontier:
        if self._frontier is not None and self._frontier.size == size and self._frontier_head == head:
            return self._frontier  # mutated in place; a failed batch calls forget_state()
        ids = frontier_node_ids(size)
        nodes: dict[tuple[int, int], bytes] = {}
        if ids:
            rows = await conn.execute(
                select(nodes_t.c.level, nodes_t.c.idx, nodes_t.c.hash).where(
                    or_(*[and_(nodes_t.c.level == lv, nodes_t.c.idx == ix) for lv, ix in ids])
                )
            )
            nodes = {(int(r.level), int(r.idx)): bytes(r.hash) for r in rows}
        return Frontier.from_nodes(size, nodes)

    async def _flush_ledger(self, conn: TxConnection, tx: Tx, frontier: Frontier, head: bytes) -> bytes:
        if not tx.entries:
            return head
        raw = conn.raw
        entry_rows = []
        node_rows = []
        totals = new_totals()
        for e in tx.entries:
            f = e.fields
            kind = e.kind
            add_entry(totals, kind, f)
            text = canonical_json({"seq": e.seq, "time": iso(e.time), "kind": kind, **f})
            leaf = leaf_hash(text)
            head = chain_hash(head, leaf)
            entry_rows.append(
                (
                    e.seq,
                    kind,
                    raw.t(e.time),
                    text.decode(),
                    leaf,
                    head,
                    f.get("card_id"),
                    f.get("merchant_id"),
                    f.get("consumer_id"),
                )
            )
            for level, index, h in frontier.append(leaf):
                node_rows.append((level, index, h))
        paid_in, released, refunded, held = totals
        raw.many(
            "INSERT INTO ledger_entries (seq, kind, time, canonical, leaf_hash, chain_hash, card_id, merchant_id, "
            "consumer_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            entry_rows,
        )
        raw.many("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", node_rows)
        raw.run(
            "UPDATE ledger_head SET size = ?, head = ?, paid_in = paid_in + ?, released = released + ?, "
            "refunded = refunded + ?, held = held + ? WHERE id = 1",
            (tx.next_seq + len(tx.entries), head, paid_in, released, refunded, held),
        )
        return head


_LOCK_HEAD_SQLITE = "SELECT size, head FROM ledger_head WHERE id = 1"
_LOCK_HEAD_PG = _LOCK_HEAD_SQLITE + " FOR UPDATE"
_LOCK_HEAD_PG_SKIP_LOCKED = _LOCK_HEAD_PG + " SKIP LOCKED"  # no row: another replica's batch holds it


@dataclass(slots=True)
class _Early:
    """What a batch's early read of its Idempotency-Keys learnt (see Writer._early_replays)."""

    head: tuple[int, bytes] | None = None  # PostgreSQL: the ledger head, locked by the early read
    absent: frozenset = frozenset()  # SQLite: keys not found, still true if `version` has not moved
    version: int | None = None  # SQLite: PRAGMA data_version just before the keys were read


_NOTHING_EARLY = _Early()


def _check_stale(sync_conn: Connection, exc: Exception) -> None:
    """Raise _Stale (after dropping the connection from the pool) if `exc` says it is dead."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    dead = getattr(exc, "connection_invalidated", False)
    if not dead and isinstance(orig, sync_conn.dialect.loaded_dbapi.Error):
        try:
            dead = sync_conn.dialect.is_disconnect(orig, sync_conn.connection.dbapi_connection, None)
        except Exception:
            dead = False
    if dead:
        if not sync_conn.invalidated:
            sync_conn.invalidate()
        raise _Stale(str(orig)) from exc


def _run_ids(run: list[Reads]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The card ids, redemption ids and (caller, key) pairs a quick run reads first."""
    return (
        [r.card for r in run if r.card],
        [r.redemption for r in run if r.redemption],
        [r.key for r in run if r.key is not None],
    )


def _first_run_end(batch: list) -> int:
    """How many of the batch's first operations form its first quick run."""
    return next((j for j, (op, _, _) in enumerate(batch) if _reads_of(op) is None), len(batch))


def _run_end(reads: list[Reads | None], start: int) -> int:
    """Where the quick run starting at `start` ends: the next operation that did not say what it reads."""
    return next((j for j in range(start, len(reads)) if reads[j] is None), len(reads))


def _refusal(exc: Exception, dbapi) -> EscrowError:
    """What a database error in one operation means for that request; re-raised when the database
    itself is in trouble (the whole batch then fails)."""
    if isinstance(exc, (IntegrityError, dbapi.IntegrityError)):
        log.warning("operation refused by a database constraint: %s", getattr(exc, "orig", exc))
        return Conflict("The change conflicts with the current state; nothing was changed.", "constraint_violation")
    if isinstance(exc, dbapi.DataError):  # a value the database cannot hold: this request's fault
        log.warning("operation refused by the database: %s", exc)
        return Unprocessable("A value is out of range for the database; nothing was changed.", "invalid_value")
    raise exc


def _answer(batch: list, results: list, callbacks: list) -> None:
    """Hand each request its result on its own loop (after the batch's after-commit callbacks)."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for (_, fut, fut_loop), result in zip(batch, results):
        by_loop.setdefault(fut_loop, []).append((fut, result))
    for fut_loop, items in by_loop.items():
        try:
            fut_loop.call_soon_threadsafe(_resolve, items, callbacks)
        except RuntimeError:  # that loop has closed: nobody is waiting any more
            pass


def _resolve(items: list, callbacks: list) -> None:
    """On the requester's loop: run after-commit callbacks (e.g. wake long-polls), then answer."""
    for cb in callbacks:
        try:
            cb()
        except Exception:
            log.exception("after-commit callback failed")
    for fut, (ok, value) in items:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
