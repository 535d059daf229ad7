"""Plain SQL for the write hot path, on the writer thread's DBAPI cursor.

SQLAlchemy builds, caches and compiles a statement in tens of microseconds; the write path runs a
handful of fixed statements per request, so it talks to the driver directly. SQL is written once
with `?` placeholders (converted for psycopg) and times are bound the way SQLAlchemy stores them,
so rows written here and rows written through SQLAlchemy compare and read back alike.

Deferred writes. Every statement psycopg sends lets go of the GIL while it waits, and getting it
back from a busy HTTP thread costs up to the interpreter's switch interval (5 ms), far more than
the statement (about 50-80 µs to PostgreSQL on loopback; `bench/gil_roundtrip.py`); PostgreSQL
itself spends ~100 µs on each small statement. So a run of redemptions in a batch has its writes
deferred: `run` and `many` queue, and the queue goes out with the next read (`reads`: writes and
reads in one message) or with the commit, on PostgreSQL as one pipeline of merged, prepared
statements (`_pg_writes`: psycopg's pipeline mode, one round trip, no statement parsed or planned
twice on the connection). On PostgreSQL a long run ships its finished operations' writes ahead
(`ship`): sent without waiting, executed while the run goes on, answered with the next read. Reads
the batch was told about in advance (`prefetch`: cards, redemptions, Idempotency-Keys) are answered
from one query each for the whole run. A write batch then talks to the database a handful of times
instead of five times per request (on SQLite: no savepoints, one read).

Under deferral a write has no row count: `run` then returns a value that raises `DeferredRowCount`
when used as a number, and inside a quick operation (`quick_op`) SQLAlchemy raises
`QuickContractBroken` (its statements would be neither deferred nor dropped with the operation).
"""

from __future__ import annotations

import re
import sqlite3
from collections import namedtuple
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from service.db.models import Card, Redemption, UTCDateTime, from_sqlite_text, sqlite_text


def _time_columns(table) -> tuple[int, ...]:
    """Positions of a table's UTCDateTime columns (read back through `Raw.pt`)."""
    return tuple(i for i, col in enumerate(table.c) if isinstance(col.type, UTCDateTime))


# How many queued writes a quick run ships at once (`Raw.ship`, PostgreSQL): about thirty operations'
# worth. Fewer would cut the merged statements into more pieces than PostgreSQL's time on them hides.
SHIP_AT = 160

# Column lists from the tables themselves (service/db/models.py), in their order.
CARD_COLS = tuple(Card.__table__.c.keys())
CardRow = namedtuple("CardRow", CARD_COLS)
_CARD_TIMES = _time_columns(Card.__table__)
CARD_SELECT = f"SELECT {', '.join(CARD_COLS)} FROM cards WHERE id = ?"

RDM_COLS = tuple(Redemption.__table__.c.keys())
RdmRow = namedtuple("RdmRow", RDM_COLS)
_RDM_TIMES = _time_columns(Redemption.__table__)
RDM_SELECT = f"SELECT {', '.join(RDM_COLS)} FROM redemptions WHERE id = ?"
# What an ask and an answer read first, each in one statement instead of two.
CARD_AND_MERCHANT_SELECT = (
    f"SELECT {', '.join('c.' + c for c in CARD_COLS)}, m.status FROM cards c "
    "JOIN merchants m ON m.id = c.merchant_id WHERE c.id = ?"
)
RDM_AND_CARD_SELECT = (
    f"SELECT {', '.join('r.' + c for c in RDM_COLS)}, {', '.join('c.' + c for c in CARD_COLS)} "
    "FROM redemptions r JOIN cards c ON c.id = r.card_id WHERE r.id = ?"
)


KEY_COLS = "k.caller, k.key, k.request_hash, k.status_code, k.response_body"
# A batch's Idempotency-Keys, given as (caller, key) pairs, in one statement.
# One primary-key probe per key, whatever the planner believes of the table's size: as a plain join,
# PostgreSQL chose a hash join over a sequential scan of every stored key while the table grew faster
# than its statistics (6 ms a batch at 11,000 keys in bench/redemptions.py, and growing).
KEYS_SELECT_PG = (
    f"SELECT {KEY_COLS} FROM unnest(?::text[], ?::text[]) AS w(caller, key) CROSS JOIN LATERAL "
    "(SELECT * FROM idempotency_keys i WHERE i.caller = w.caller AND i.key = w.key LIMIT 1) AS k"
)
KEYS_SELECT_SQLITE = f"SELECT {KEY_COLS} FROM json_each(?) w JOIN idempotency_keys k " + (
    "ON k.caller = w.value ->> 0 AND k.key = w.value ->> 1"  # about half json_extract's time
    if sqlite3.sqlite_version_info >= (3, 38, 0)
    else "ON k.caller = json_extract(w.value, '$[0]') AND k.key = json_extract(w.value, '$[1]')"
)
KEY_SELECT = "SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE caller = ? AND key = ?"
KEY_INSERT = (
    "INSERT INTO idempotency_keys (caller, key, request_hash, status_code, response_body, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


class DeferredRowCount(RuntimeError):
    """A row count was asked of a write that has not been sent (it is deferred)."""


class QuickContractBroken(RuntimeError):
    """A quick operation used SQLAlchemy: its statements would not be deferred, merged or dropped."""


class _Deferred:
    """What `Raw.run` returns while writes are deferred: any use as a number raises."""

    __slots__ = ()

    def _refuse(self, *_):
        raise DeferredRowCount("a deferred write has no row count yet; read the row instead")

    __int__ = __index__ = __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = _refuse

    def __repr__(self) -> str:
        return "<deferred row count>"


DEFERRED = _Deferred()


# Times on SQLite: exactly models.UTCDateTime's text (its own processors), memoised: a write batch binds
# its one `now` many times and reads the same few card times again and again.
cached_sqlite_text = lru_cache(maxsize=256)(sqlite_text)
cached_from_sqlite_text = lru_cache(maxsize=4096)(from_sqlite_text)


class Raw:
    """Driver-level access inside the writer's transaction."""

    __slots__ = (
        "_cursor",
        "is_pg",
        "_pending",
        "sent",
        "_cards",
        "_rdms",
        "_keys",
        "_pipeline",
        "quick_op",
        "_dbapi",
        "_begin",
        "_autocommit",
        "_open",
    )

    def __init__(self, dbapi_connection, is_pg: bool):
        self._dbapi = dbapi_connection
        self._begin = False  # PostgreSQL: BEGIN goes out with the next statement (see begin_with_first_statement)
        self._autocommit = False  # this Raw put the connection in autocommit mode
        self._open: ExitStack | None = None  # PostgreSQL: a pipeline with shipped writes not yet synced (see ship)
        self._cursor = dbapi_connection.cursor()
        self.is_pg = is_pg
        self._pending: list[tuple[str, Any, bool]] | None = None  # deferred (sql, params or rows, is_many)
        self.sent = 0  # statements sent while deferring (a live statement counts one)
        self._cards: dict[str, tuple[CardRow, str]] = {}
        self._rdms: dict[str, tuple[RdmRow, CardRow]] = {}
        # (caller, key) -> the stored (request_hash, status_code, response_body), or None when known
        # absent: read with the run's prefetch, and recorded as the run stores keys.
        self._keys: dict[tuple[str, str], tuple | None] = {}
        self.quick_op = False  # a quick operation is running: SQLAlchemy is refused (see live())
        # PostgreSQL: statements go out together in pipeline mode (libpq 14 or later), each prepared once.
        self._pipeline = is_pg and _pipeline_supported()
        if self._pipeline and dbapi_connection.prepared_max < _PREPARED_MAX:
            dbapi_connection.prepared_max = _PREPARED_MAX

    # -- the transaction's BEGIN -------------------------------------------------------------------
    def begin_with_first_statement(self) -> bool:
        """PostgreSQL: begin the transaction in the same message as its first statement instead of a
        round trip of its own (psycopg sends BEGIN alone before the first statement). The connection
        goes into autocommit mode, so psycopg sends no BEGIN, and every way a statement leaves this
        class (or SQLAlchemy's, through `live()`) sends BEGIN first or in the same pipeline. psycopg's
        commit() and rollback() act on the server's transaction whatever the mode. `end_batch()`
        puts the connection back. False (nothing changed) where this cannot be done."""
        if not self._pipeline:
            return False
        try:
            if self._dbapi.pgconn.transaction_status != _PG_IDLE:
                return False
            self._dbapi.autocommit = True
        except Exception:  # e.g. a connection already known dead: its first statement will say so
            return False
        self._autocommit = self._begin = True
        return True

    def end_batch(self) -> None:
        """The connection back in its usual mode (psycopg's own BEGIN), once the batch has ended."""
        self._drop_open()
        if not self._autocommit:
            return
        self._begin = False
        try:
            if self._dbapi.pgconn.transaction_status == _PG_IDLE:
                self._dbapi.autocommit = False
                self._autocommit = False
        except Exception:  # a dead connection: the pool drops it
            pass

    def rollback(self) -> None:
        """Roll the transaction back; the next statement begins a new one."""
        self._drop_open()
        self._dbapi.rollback()
        self._begin = self._autocommit

    def _send_begin(self) -> None:
        """A statement is about to go alone: BEGIN first if the transaction has not begun."""
        if self._begin:
            self._begin = False
            self._cursor.execute("BEGIN", prepare=False)

    def _with_begin(self, statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        if self._begin:
            self._begin = False
            return [("BEGIN", None), *statements]
        return statements

    def _pipe(self, writes: list[tuple[str, Any]], queries: list[tuple[str, Any]]) -> list[list[tuple]]:
        """PostgreSQL: `writes` then `queries` (SQL with `?`, parameters or None) in one pipeline, one
        round trip; each query's rows. Every statement with parameters is prepared once on this
        connection (its text is the same whatever the batch's size: rows go as arrays); the queries
        are planned for their parameters each time (a generic plan made while a table was small would
        keep scanning it whole as it grows: 52 ms a batch for the redemptions' read after 20 s of
        bench/redemptions.py). Parameters go in binary: psycopg escapes each string of an array in text format with a regular expression
        (20 ms for a batch's 256 ledger texts, against 0.07 ms in binary). Should one fail,
        PostgreSQL skips the rest (the COMMIT too) and psycopg raises its error."""
        conn = self._dbapi
        readers = []
        stack, self._open = self._open or _pipeline(conn), None  # (writes shipped before go with these)
        with stack:
            self._send(writes)
            for sql, params in queries:
                reader = conn.cursor()
                reader.execute(_psycopg(sql, "%b"), params, prepare=False)
                readers.append(reader)
        return [reader.fetchall() for reader in readers]

    def _send(self, writes: list[tuple[str, Any]]) -> None:
        cur = self._cursor
        for sql, params in writes:
            if params is None:
                cur.execute(sql, prepare=False)
            else:
                cur.execute(_psycopg(sql, "%b"), params, prepare=True)

    def ship(self) -> bool:
        """PostgreSQL, between the operations of a quick run: once `SHIP_AT` writes are queued, send
        them now (merged as `flush` would) without waiting for their results, so that PostgreSQL
        executes them while the run's next operations are computed. The pipeline stays open: the
        next read, flush or COMMIT sends its statements after them and waits for all (one Sync), and
        an error of a shipped write is raised there. Only finished operations' writes may be shipped:
        they can no longer be dropped (`discard_since` refuses), only rolled back. True if sent."""
        pending = self._pending
        if not self._pipeline or not pending or len(pending) < SHIP_AT:
            return False
        if self._open is None:
            self._open = _pipeline(self._dbapi)
        self._pending = []
        self.sent += len(pending)
        try:
            self._send(self._with_begin(_pg_writes(pending)))
        except BaseException:
            self._drop_open()
            raise
        return True

    def _drop_open(self) -> None:
        """Leave an open pipeline without raising (the transaction is being abandoned)."""
        stack, self._open = self._open, None
        if stack is not None:
            try:
                stack.close()
            except Exception:
                pass

    # -- deferred writes ---------------------------------------------------------------------------
    def defer(self) -> None:
        """From now on writes queue until the next read, `flush()` or live statement (what is queued
        already stays queued)."""
        if self._pending is None:
            self._pending = []

    def stop_deferring(self) -> None:
        """Send what is queued; from now on every statement runs at once and reads the database
        (rows read in advance may be stale once other operations run)."""
        self.flush()
        self._pending = None
        self.forget_prefetch()

    def mark(self) -> int:
        """Where the writes from here on start (an absolute statement count)."""
        return self.sent + (len(self._pending) if self._pending is not None else 0)

    def discard_since(self, mark: int) -> bool:
        """Drop the writes queued since `mark`. False when some already went out (or a live
        statement ran since): then only rolling back can undo them."""
        if self._pending is None or self.sent > mark:
            return False
        del self._pending[mark - self.sent :]
        return True

    def live(self) -> None:
        """A statement is about to run outside this class (SQLAlchemy): send what is queued first,
        and count it, since it may write. Refused inside a quick operation."""
        if self.quick_op:
            raise QuickContractBroken("a quick operation must use tx.conn.raw only")
        if self._pending is not None:
            self.flush()
            self.sent += 1
        self._send_begin()

    def flush(self, commit: bool = False) -> None:
        """Send what is queued. With `commit`, on PostgreSQL the pipeline ends with the COMMIT (one
        round trip for both; the driver's own commit then finds nothing left to do)."""
        pending = self._pending or []
        if not pending and self._open is None:
            return
        if pending:
            self._pending = []
        self.sent += len(pending)
        cur = self._cursor
        if self._pipeline:
            self._pipe(self._with_begin(_pg_writes(pending) + ([("COMMIT", None)] if commit else [])), [])
            return
        self._send_begin()
        for sql, params, is_many in pending if self.is_pg else _grouped(pending):
            if is_many:
                cur.executemany(self._convert(sql), params)
            else:
                cur.execute(self._convert(sql), params)

    def reads(self, queries: list[tuple[str, tuple]]) -> list[list[tuple]]:
        """Each query's rows, read after what is queued went out. On PostgreSQL, when there are
        queued writes or several reads, writes and reads go as one pipeline: one round trip."""
        pending = self._pending
        if self._pipeline and (pending or len(queries) > 1 or self._begin or self._open is not None):
            writes = _pg_writes(pending) if pending else []
            if pending:
                self._pending = []
                self.sent += len(pending)
            return self._pipe(self._with_begin(writes), queries)
        if pending:
            self.flush()
        self._send_begin()
        cur = self._cursor
        out = []
        for sql, params in queries:
            cur.execute(self._convert(sql), params)
            out.append(cur.fetchall())
        return out

    # -- reads known in advance --------------------------------------------------------------------
    def prefetch(
        self,
        card_ids: list[str],
        redemption_ids: list[str],
        keys: list[tuple[str, str]] = (),
        lead: str | None = None,
        absent: frozenset = frozenset(),
    ) -> list[tuple] | None:
        """Read, in one statement each, the cards (with their merchant's status), the redemptions
        (with their card) and the Idempotency-Keys (as (caller, key)) a run of a batch's operations
        will ask for; on PostgreSQL together with what is queued and with `lead` (a read without
        parameters run first, e.g. the lock on the ledger head), in one round trip. Returns `lead`'s
        rows. A row is kept only when it is the one operation of the run on that card: a second
        would have to see the first one's writes. Keys are kept all: a key stored by the run is
        recorded as it is stored (`store_key`). Keys in `absent` are known not to be stored (the
        writer read them already, and nothing was committed since): they are not read again."""
        queries: list[tuple[str, tuple]] = [(lead, ())] if lead else []
        wanted = [k for k in keys if k not in absent] if absent else keys
        if card_ids:
            queries.append((CARD_AND_MERCHANT_SELECT.replace("c.id = ?", self._in("c.id")), (self._ids(card_ids),)))
        if redemption_ids:
            queries.append((RDM_AND_CARD_SELECT.replace("r.id = ?", self._in("r.id")), (self._ids(redemption_ids),)))
        if wanted:
            queries.append(self._keys_query(wanted))
        results = iter(self.reads(queries))
        led = next(results) if lead else None
        cards: dict[str, tuple[CardRow, str]] = {}
        rdms: dict[str, tuple[RdmRow, CardRow]] = {}
        if card_ids:
            for row in next(results):
                found_card = self._card_and_status(row)
                cards[found_card[0].id] = found_card  # by name: the table's first column is not its id
        if redemption_ids:
            for row in next(results):
                found_rdm = self._rdm_and_card(row)
                rdms[found_rdm[0].id] = found_rdm
        uses: dict[str, int] = {}
        for cid in card_ids:
            uses[cid] = uses.get(cid, 0) + 1
        for rid in redemption_ids:
            found = rdms.get(rid)
            key = found[1].id if found is not None else rid
            uses[key] = uses.get(key, 0) + 1
            uses[rid] = uses.get(rid, 0) + 1
        self._cards = {k: v for k, v in cards.items() if uses.get(k) == 1}
        self._rdms = {k: v for k, v in rdms.items() if uses.get(k) == 1 and uses.get(v[1].id) == 1}
        if keys:
            found = {(row[0], row[1]): tuple(row[2:]) for row in next(results)} if wanted else {}
            self._keys = {k: found.get(k) for k in keys}
        return led

    def found_keys(self) -> dict[tuple[str, str], tuple]:
        """The stored answers the last prefetch found, by (caller, key)."""
        return {k: v for k, v in self._keys.items() if v is not None}

    def forget_prefetch(self) -> None:
        """Drop the rows read in advance (they were read without the lock)."""
        self._cards.clear()
        self._rdms.clear()
        self._keys.clear()

    def data_version(self) -> int:
        """SQLite's `PRAGMA data_version`: it moves when another connection commits."""
        return self.one("PRAGMA data_version")[0]

    def _keys_query(self, keys: list[tuple[str, str]]) -> tuple[str, tuple]:
        if self.is_pg:
            return KEYS_SELECT_PG, ([c for c, _ in keys], [k for _, k in keys])
        return KEYS_SELECT_SQLITE, (orjson.dumps(keys).decode(),)

    def stored_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
        """The stored answers of these (caller, key) pairs that exist, read in one statement."""
        rows = self.reads([self._keys_query(keys)])[0]
        return {(row[0], row[1]): tuple(row[2:]) for row in rows}

    def stored_key(self, caller: str, key: str) -> tuple | None:
        """(request_hash, status_code, response_body) stored for the caller's key, or None: from the
        run's prefetch when it read the key, else read now."""
        try:
            return self._keys[(caller, key)]
        except KeyError:
            return self.one(KEY_SELECT, (caller, key))

    def store_key(self, caller: str, key: str, request_hash: str, status: int, body: str, now: datetime) -> None:
        """Store an answer under the caller's key (a write like the others: deferred and merged in a
        quick run); an operation of the same run with the same key then finds it."""
        self.run(KEY_INSERT, (caller, key, request_hash, status, body, self.t(now)))
        if (caller, key) in self._keys:
            self._keys[(caller, key)] = (request_hash, status, body)

    def _in(self, column: str) -> str:
        return f"{column} = ANY(?)" if self.is_pg else f"{column} IN (SELECT value FROM json_each(?))"

    def _ids(self, ids: list[str]):
        return list(ids) if self.is_pg else orjson.dumps(list(ids)).decode()

    def _convert(self, sql: str) -> str:
        return _psycopg(sql, "%s") if self.is_pg else sql

    def one(self, sql: str, params: tuple = ()) -> tuple | None:
        if self._pending or self._open is not None:
            rows = self.reads([(sql, params)])[0]
            return rows[0] if rows else None
        self._send_begin()
        cur = self._cursor
        cur.execute(self._convert(sql), params)
        return cur.fetchone()

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self._pending or self._open is not None:
            return self.reads([(sql, params)])[0]
        self._send_begin()
        cur = self._cursor
        cur.execute(self._convert(sql), params)
        return cur.fetchall()

    def run(self, sql: str, params: tuple = ()) -> int:
        """Execute a write; its row count. While writes are deferred there is none yet: what is
        returned then raises `DeferredRowCount` when used as a number (read the row instead)."""
        if self._pending is not None:
            self._pending.append((sql, params, False))
            return DEFERRED  # type: ignore[return-value]
        self._send_begin()
        cur = self._cursor
        cur.execute(self._convert(sql), params)
        return cur.rowcount

    def many(self, sql: str, rows: list[tuple]) -> None:
        if rows and self._pending is not None:
            self._pending.append((sql, rows, True))
        elif rows:
            self._send_begin()
            self._cursor.executemany(self._convert(sql), rows)

    # Times: SQLAlchemy keeps SQLite datetimes as naive UTC text with microseconds (`cached_sqlite_text`).
    def t(self, dt: datetime | None):
        if dt is None or self.is_pg:
            return dt
        return cached_sqlite_text(dt)

    def pt(self, value) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return cached_from_sqlite_text(value)
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def card(self, card_id: str) -> CardRow | None:
        return self._read(CARD_SELECT, card_id, self._card_row)

    def card_and_merchant_status(self, card_id: str) -> tuple[CardRow, str] | None:
        """The card and its merchant's status (one statement; from the run's prefetch when it read it)."""
        return self._cards.pop(card_id, None) or self._read(CARD_AND_MERCHANT_SELECT, card_id, self._card_and_status)

    def redemption(self, redemption_id: str) -> RdmRow | None:
        return self._read(RDM_SELECT, redemption_id, self._rdm_row)

    def redemption_and_card(self, redemption_id: str) -> tuple[RdmRow, CardRow] | None:
        """The redemption and its card (one statement; from the run's prefetch when it read it)."""
        return self._rdms.pop(redemption_id, None) or self._read(RDM_AND_CARD_SELECT, redemption_id, self._rdm_and_card)

    def _read(self, sql: str, row_id: str, typed):
        """The one row `sql` finds for `row_id`, typed by `typed`, or None."""
        row = self.one(sql, (row_id,))
        return None if row is None else typed(row)

    def _card_and_status(self, row) -> tuple[CardRow, str]:
        return self._card_row(row[:-1]), row[-1]

    def _rdm_and_card(self, row) -> tuple[RdmRow, CardRow]:
        n = len(RDM_COLS)
        return self._rdm_row(row[:n]), self._card_row(row[n:])

    def _card_row(self, row) -> CardRow:
        return CardRow(*self._times_read(row, _CARD_TIMES))

    def _rdm_row(self, row) -> RdmRow:
        return RdmRow(*self._times_read(row, _RDM_TIMES))

    def _times_read(self, row, times: tuple[int, ...]) -> list:
        """The row with its UTCDateTime columns (at `times`) read back as aware datetimes."""
        row = list(row)
        for i in times:
            row[i] = self.pt(row[i])
        return row


# -- PostgreSQL's deferred writes: one pipeline of prepared statements -------------------------------

_PG_IDLE = 0  # libpq's PQTRANS_IDLE: no transaction open
# Statements a writer connection keeps prepared (psycopg's default is 100; the write path has a few dozen
# texts, and an array's element type is part of what psycopg keys a prepared statement by).
_PREPARED_MAX = 512


@lru_cache(maxsize=1024)
def _psycopg(sql: str, placeholder: str) -> str:
    """`sql` for psycopg: every `?` a `placeholder` (`%s`, or `%b` for a parameter sent in binary)."""
    return sql.replace("%", "%%").replace("?", placeholder)


def _pipeline(conn) -> ExitStack:
    """psycopg's pipeline mode entered on `conn`, to be left with the stack (Sync, and every result read)."""
    stack = ExitStack()
    stack.enter_context(conn.pipeline())
    return stack


@lru_cache(maxsize=1)
def _pipeline_supported() -> bool:
    import psycopg

    return psycopg.Pipeline.is_supported()


def _pg_writes(pending: list[tuple[str, Any, bool]]) -> list[tuple[str, Any]]:
    """The deferred writes as (SQL with `?`, parameters) statements for one pipeline: the row writes of
    one statement text merged into one statement over arrays (`_merge`), the rows of a plain INSERT
    given to `many` into one; any other statement once per row."""
    out: list[tuple[str, Any]] = []
    run: list[tuple[_RowWrite, Any]] = []
    for sql, params, is_many in pending:
        shape = _row_write(sql)
        if shape is not None and not is_many:
            run.append((shape, params))
            continue
        out.extend(_merge(run))
        run = []
        if not is_many:
            out.append((sql, params))
        elif shape is not None and shape.kind == "insert" and len(params) > 1 and _unnest_sql(shape) is not None:
            out.append(_unnest(shape, params))
        else:
            out.extend((sql, row) for row in params)
    out.extend(_merge(run))
    return out


@dataclass(frozen=True, eq=False)  # one per statement text (memoised): compared by identity
class _RowWrite:
    """A one-row write by primary key: `UPDATE t SET a = ?, b = 'x' WHERE id = ?` or
    `INSERT INTO t (id, a, b) VALUES (?, ?, NULL)`."""

    kind: str  # "update" | "insert"
    table: str
    sql: str
    columns: tuple[str, ...]  # updated columns or inserted columns
    values: tuple[str | None, ...]  # per column: None for a parameter, else the constant's SQL text
    key_param: int | None  # which parameter is the row's id (None: an insert without one)

    def key(self, params):
        return None if self.key_param is None else params[self.key_param]


_CONST = r"(?:\?|NULL|'[^'?,]*'|-?\d+)"  # (a string with a comma: not a row write, sent as written)
_UPDATE_RE = re.compile(rf"UPDATE (\w+) SET ((?:\w+ = {_CONST}, )*\w+ = {_CONST}) WHERE id = \?")
_INSERT_RE = re.compile(rf"INSERT INTO (\w+) \(((?:\w+, )*\w+)\) VALUES \(((?:{_CONST}, )*{_CONST})\)")


@lru_cache(maxsize=256)
def _row_write(sql: str) -> _RowWrite | None:
    if m := _UPDATE_RE.fullmatch(sql):
        pairs = [item.split(" = ", 1) for item in m.group(2).split(", ")]
        values = tuple(None if v == "?" else v for _, v in pairs)
        return _RowWrite("update", m.group(1), sql, tuple(c for c, _ in pairs), values, values.count(None))
    if m := _INSERT_RE.fullmatch(sql):
        columns = tuple(m.group(2).split(", "))
        values = tuple(None if v == "?" else v for v in m.group(3).split(", "))
        if len(columns) != len(values):
            return None
        key = None
        if "id" in columns and values[columns.index("id")] is None:
            key = values[: columns.index("id")].count(None)
        return _RowWrite("insert", m.group(1), sql, columns, values, key)
    return None


def _merge(run: list[tuple[_RowWrite, Any]]) -> list[tuple[str, Any]]:
    """Row writes as few statements: one INSERT … SELECT FROM unnest(…), or one UPDATE … FROM
    unnest(…), per kind of write, in the order each kind first appears; the rows go as one array per
    column, so the statement's text (and its prepared plan) is the same for any number of rows.
    Merging moves a write past others, which is safe when no row is written twice: then the order can
    only matter through a foreign key to a row inserted in the same run, and that fails loudly (the
    batch then runs the careful way)."""
    groups = _groups(run)
    if groups is None:
        return [(shape.sql, params) for shape, params in run]
    out: list[tuple[str, Any]] = []
    for shape, group in groups.items():
        if len(group) == 1 or _unnest_sql(shape) is None:
            out.extend((shape.sql, params) for params in group)
        elif shape.kind == "insert":
            out.append(_unnest(shape, group))
        else:
            # By primary key, row by row: with statistics behind a growing table PostgreSQL would otherwise
            # hash the arrays and scan the whole table for them (seen on redemptions in bench/redemptions.py).
            out += [
                ("SET LOCAL enable_seqscan = off", None),
                _unnest(shape, group),
                ("SET LOCAL enable_seqscan TO DEFAULT", None),
            ]
    return out


def _groups(run: list[tuple[_RowWrite, Any]]) -> dict[_RowWrite, list] | None:
    """The run's row writes grouped by statement text, in the order each first appears; None when
    they may not be reordered (a row written twice, or an insert without an id into a table the run
    updates) or there is nothing to group."""
    if len(run) < 2:
        return None
    updated = {shape.table for shape, _ in run if shape.kind == "update"}
    rows: set = set()
    groups: dict[_RowWrite, list] = {}
    for shape, params in run:
        key = shape.key(params)
        if key is None:
            if shape.table in updated:
                return None
        elif (shape.table, key) in rows:
            return None
        else:
            rows.add((shape.table, key))
        groups.setdefault(shape, []).append(params)
    return groups


def _grouped(pending: list[tuple[str, Any, bool]]) -> list[tuple[str, Any, bool]]:
    """SQLite: the deferred writes with the row writes of one statement text put together, to go
    as one `executemany` each (by `_merge`'s rule: a foreign key to a row inserted later in the
    same run fails loudly, and the batch then runs the careful way)."""
    out: list[tuple[str, Any, bool]] = []
    run: list[tuple[_RowWrite, Any]] = []

    def close_run() -> None:
        groups = _groups(run)
        if groups is None:
            out.extend((shape.sql, params, False) for shape, params in run)
        else:
            out.extend(
                (shape.sql, rows, True) if len(rows) > 1 else (shape.sql, rows[0], False)
                for shape, rows in groups.items()
            )
        run.clear()

    for item in pending:
        sql, params, is_many = item
        shape = None if is_many else _row_write(sql)
        if shape is not None:
            run.append((shape, params))
            continue
        close_run()
        out.append(item)
    close_run()
    return out


def _unnest(shape: _RowWrite, group: list) -> tuple[str, tuple[list, ...]]:
    """The merged statement of `group` (parameter tuples of `shape`) and its arrays, one per parameter;
    an UPDATE's first array is the rows' ids (its last parameter)."""
    sql = _unnest_sql(shape)
    n = len(group[0])
    order = (n - 1, *range(n - 1)) if shape.kind == "update" else range(n)
    return sql, tuple([params[i] for params in group] for i in order)  # type: ignore[return-value]


@lru_cache(maxsize=256)
def _unnest_sql(shape: _RowWrite) -> str | None:
    """`shape` over arrays: `UPDATE t AS t SET a = v.a … FROM unnest(?::type[], …) AS v(id, a, …) WHERE
    t.id = v.id`, or `INSERT INTO t (…) SELECT v.a, 'const', … FROM unnest(?::type[], …) AS v(a, …)`.
    None when a column's type is not known from the tables (service/db/models.py)."""
    params_of = [c for c, v in zip(shape.columns, shape.values) if v is None]
    if shape.kind == "update":
        params_of = ["id", *params_of]
    types = _pg_column_types().get(shape.table)
    if not params_of or types is None or any(c not in types for c in params_of):
        return None
    arrays = ", ".join(f"?::{types[c]}[]" for c in params_of)
    names = ", ".join(f'"{c}"' for c in params_of)
    if shape.kind == "update":
        sets = ", ".join(f'{c} = v."{c}"' if v is None else f"{c} = {v}" for c, v in zip(shape.columns, shape.values))
        return f"UPDATE {shape.table} AS t SET {sets} FROM unnest({arrays}) AS v({names}) WHERE t.id = v.id"
    exprs = ", ".join(f'v."{c}"' if v is None else v for c, v in zip(shape.columns, shape.values))
    return f"INSERT INTO {shape.table} ({', '.join(shape.columns)}) SELECT {exprs} FROM unnest({arrays}) AS v({names})"


@lru_cache(maxsize=1)
def _pg_column_types() -> dict[str, dict[str, str]]:
    """Every table's columns and their PostgreSQL types, from the models (what Alembic created)."""
    from sqlalchemy.dialects import postgresql
    from sqlmodel import SQLModel

    dialect = postgresql.dialect()

    def array_type(column) -> str:
        # Without a length: an explicit cast to VARCHAR(n) cuts a longer string short without a word, where
        # the assignment to the column refuses it (as a single-row write would).
        return re.sub(r"^VARCHAR\(\d+\)$", "VARCHAR", column.type.compile(dialect=dialect))

    return {name: {c.name: array_type(c) for c in table.c} for name, table in SQLModel.metadata.tables.items()}
