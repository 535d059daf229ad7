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
reads in one message) or with the commit, on PostgreSQL as one script of merged statements. Reads
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
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from service.db.models import Card, Redemption, UTCDateTime, from_sqlite_text, sqlite_text


def _time_columns(table) -> tuple[int, ...]:
    """Positions of a table's UTCDateTime columns (read back through `Raw.pt`)."""
    return tuple(i for i, col in enumerate(table.c) if isinstance(col.type, UTCDateTime))


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
        "_sql",
        "_pending",
        "sent",
        "_cards",
        "_rdms",
        "_keys",
        "_literal_ok",
        "quick_op",
        "_dbapi",
        "_begin",
        "_autocommit",
    )

    def __init__(self, dbapi_connection, is_pg: bool):
        self._dbapi = dbapi_connection
        self._begin = False  # PostgreSQL: BEGIN goes out with the next statement (see begin_with_first_statement)
        self._autocommit = False  # this Raw put the connection in autocommit mode
        self._cursor = dbapi_connection.cursor()
        self.is_pg = is_pg
        self._sql: dict[str, str] = {}
        self._pending: list[tuple[str, Any, bool]] | None = None  # deferred (sql, params or rows, is_many)
        self.sent = 0  # statements sent while deferring (a live statement counts one)
        self._cards: dict[str, tuple[CardRow, str]] = {}
        self._rdms: dict[str, tuple[RdmRow, CardRow]] = {}
        # (caller, key) -> the stored (request_hash, status_code, response_body), or None when known
        # absent: read with the run's prefetch, and recorded as the run stores keys.
        self._keys: dict[tuple[str, str], tuple | None] = {}
        self.quick_op = False  # a quick operation is running: SQLAlchemy is refused (see live())
        # Writes go out as one script of literal SQL only where quoting is exactly ours to do.
        self._literal_ok = is_pg and _literal_quoting_safe(dbapi_connection)

    # -- the transaction's BEGIN -------------------------------------------------------------------
    def begin_with_first_statement(self) -> bool:
        """PostgreSQL: begin the transaction in the same message as its first statement instead of a
        round trip of its own (psycopg sends BEGIN alone before the first statement). The connection
        goes into autocommit mode, so psycopg sends no BEGIN, and every way a statement leaves this
        class (or SQLAlchemy's, through `live()`) sends BEGIN first or in the same script. psycopg's
        commit() and rollback() act on the server's transaction whatever the mode. `end_batch()`
        puts the connection back. False (nothing changed) where this cannot be done."""
        if not self._literal_ok:
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
        self._dbapi.rollback()
        self._begin = self._autocommit

    def _send_begin(self) -> None:
        """A statement is about to go alone: BEGIN first if the transaction has not begun."""
        if self._begin:
            self._begin = False
            self._cursor.execute("BEGIN", prepare=False)

    def _with_begin(self, script: list[str]) -> list[str]:
        if self._begin:
            self._begin = False
            return ["BEGIN", *script]
        return script

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
        """Send what is queued. With `commit`, on PostgreSQL the script ends with the COMMIT (one
        round trip for both; the driver's own commit then finds nothing left to do)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self.sent += len(pending)
        cur = self._cursor
        if self._literal_ok:
            # No parameters: psycopg sends it as a simple query, several statements in one message.
            # Should one fail, PostgreSQL runs none after it: the COMMIT too.
            script = self._with_begin(_script(pending) + (["COMMIT"] if commit else []))
            cur.execute(";\n".join(script), prepare=False)
            return
        self._send_begin()
        for sql, params, is_many in pending if self.is_pg else _grouped(pending):
            if is_many:
                cur.executemany(self._convert(sql), params)
            else:
                cur.execute(self._convert(sql), params)

    def reads(self, queries: list[tuple[str, tuple]]) -> list[list[tuple]]:
        """Each query's rows, read after what is queued went out. On PostgreSQL, when there are
        queued writes or several reads, writes and reads go as one script: one round trip."""
        pending = self._pending
        if self._literal_ok and (pending or len(queries) > 1 or self._begin):
            try:
                script = (_script(pending) if pending else []) + [_bind(_split(sql), p) for sql, p in queries]
            except LiteralRefused:
                pass  # a value the script cannot carry: the writes go alone (or fail), reads bound
            else:
                script = self._with_begin(script)
                if pending:
                    self._pending = []
                    self.sent += len(pending)
                cur = self._cursor
                cur.execute(";\n".join(script), prepare=False)
                for _ in range(len(script) - len(queries)):  # the writes' results
                    cur.nextset()
                out = [cur.fetchall()]
                while cur.nextset():
                    out.append(cur.fetchall())
                return out
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
        if not self.is_pg:
            return sql
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return converted

    def one(self, sql: str, params: tuple = ()) -> tuple | None:
        if self._pending:
            rows = self.reads([(sql, params)])[0]
            return rows[0] if rows else None
        self._send_begin()
        cur = self._cursor
        cur.execute(self._convert(sql), params)
        return cur.fetchone()

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self._pending:
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


# -- literal SQL for PostgreSQL's deferred writes ------------------------------------------------
# With standard_conforming_strings on and UTF-8 on the wire, a string literal's only special
# character is the quote, doubled; a NUL cannot be sent at all (the driver refuses it in a bound
# parameter too). Values of any other type are not ours to quote: the script then is not used.


def _literal_quoting_safe(dbapi_connection) -> bool:
    status = dbapi_connection.pgconn.parameter_status
    return (
        status(b"standard_conforming_strings") == b"on"
        and (status(b"client_encoding") or b"").upper().replace(b"-", b"") == b"UTF8"
    )


_PG_IDLE = 0  # libpq's PQTRANS_IDLE: no transaction open


class LiteralRefused(ValueError):
    """A value the literal script does not quote: the batch runs again with bound parameters."""


@lru_cache(maxsize=256)
def _split(sql: str) -> tuple[str, ...]:
    return tuple(sql.split("?"))


def _script(pending: list[tuple[str, Any, bool]]) -> list[str]:
    """The deferred writes as literal SQL statements, row writes of one kind merged (`_merge`)."""
    out: list[str] = []
    run: list[tuple[_RowWrite, Any]] = []
    for sql, params, is_many in pending:
        shape = None if is_many else _row_write(sql)
        if shape is not None:
            run.append((shape, params))
            continue
        out.extend(_merge(run))
        run = []
        if is_many:
            head, values = _multi_row(sql)
            if values is not None:  # a plain INSERT: one statement for all its rows
                out.append(head + ", ".join(_bind(values, row) for row in params))
            else:
                parts = _split(sql)
                out.extend(_bind(parts, row) for row in params)
        else:
            out.append(_bind(_split(sql), params))
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


_CONST = r"(?:\?|NULL|'[^'?]*'|-?\d+)"
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


def _merge(run: list[tuple[_RowWrite, Any]]) -> list[str]:
    """Row writes as few statements: one multi-row INSERT, or one UPDATE … FROM (VALUES …), per kind
    of write, in the order each kind first appears. Merging moves a write past others, which is
    safe when no row is written twice: then the order can only matter through a foreign key to a
    row inserted in the same run, and that fails loudly (the batch then runs the careful way)."""
    groups = _groups(run)
    if groups is None:
        return _one_by_one(run)
    out = []
    for shape, group in groups.items():
        if len(group) == 1:
            out.extend(_one_by_one([(shape, group[0])]))
        elif shape.kind == "insert":
            head, row = _multi_row(shape.sql)
            out.append(head + ", ".join(_bind(row, params) for params in group))
        else:
            out.extend(_update_from_values(shape, group))
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


def _one_by_one(run: list[tuple[_RowWrite, Any]]) -> list[str]:
    return [_bind(_split(shape.sql), params) for shape, params in run]


def _update_from_values(shape: _RowWrite, group: list) -> list[str]:
    params_of = [c for c, v in zip(shape.columns, shape.values) if v is None]
    for i in range(len(params_of)):
        if all(params[i] is None for params in group):  # a NULL-only column has no type in VALUES
            return _one_by_one([(shape, params) for params in group])
    sets = ", ".join(f"{c} = v.{c}" if v is None else f"{c} = {v}" for c, v in zip(shape.columns, shape.values))
    rows = ", ".join("(" + ", ".join(_literal(x) for x in (params[-1], *params[:-1])) + ")" for params in group)
    # By primary key, row by row: with statistics behind a growing table PostgreSQL would otherwise hash
    # the VALUES and scan the whole table for them (seen on redemptions in bench/redemptions.py).
    return [
        "SET LOCAL enable_seqscan = off",
        f"UPDATE {shape.table} AS t SET {sets} FROM (VALUES {rows}) AS v(id, {', '.join(params_of)}) WHERE t.id = v.id",
        "SET LOCAL enable_seqscan TO DEFAULT",
    ]


@lru_cache(maxsize=64)
def _multi_row(sql: str) -> tuple[str, tuple[str, ...] | None]:
    """("INSERT INTO t (…) VALUES ", parts of one row's "(?, …)") for a plain one-row INSERT."""
    head, sep, row = sql.partition(" VALUES ")
    if (
        not sep
        or not head.startswith("INSERT INTO ")
        or not row.startswith("(")
        or not row.endswith(")")
        or ")" in row[:-1]
        or "?" in head
    ):
        return sql, None
    return head + sep, _split(row)


def _literal(value) -> str:
    t = type(value)
    if t is int:
        return str(value)
    if t is str:
        if "\x00" in value:
            raise LiteralRefused("NUL in a string")
        return "'" + value.replace("'", "''") + "'"
    if value is None:
        return "NULL"
    if t is bytes:
        return "'\\x" + value.hex() + "'::bytea"
    if t is bool:
        return "true" if value else "false"
    if t is datetime and value.tzinfo is not None:
        return "'" + value.isoformat() + "'::timestamptz"
    if t is list and value and all(type(v) is str for v in value):  # ids for `= ANY(?)` in a read
        return "ARRAY[" + ", ".join(map(_literal, value)) + "]"
    raise LiteralRefused(f"no literal for {t.__name__}")


def _bind(parts: tuple[str, ...], params) -> str:
    if len(params) != len(parts) - 1:
        raise LiteralRefused("parameter count")
    out = [parts[0]]
    for value, part in zip(params, parts[1:]):
        out.append(_literal(value))
        out.append(part)
    return "".join(out)
