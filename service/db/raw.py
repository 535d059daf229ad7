"""Plain SQL for the write hot path, on the writer thread's DBAPI cursor.

SQLAlchemy builds, caches and compiles a statement in tens of microseconds; the write path runs a
handful of fixed statements per request, so it talks to the driver directly. SQL is written once
with `?` placeholders (converted for psycopg) and times are bound the way SQLAlchemy stores them,
so rows written here and rows written through SQLAlchemy compare and read back alike.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime, timezone
from functools import lru_cache

CARD_COLS = ("id", "product_id", "merchant_id", "consumer_id", "type", "status", "price", "currency", "list_price",
             "units_total", "units_used", "units_held", "period_days", "escrow", "held", "released", "refunded",
             "payment_method", "payment_reference", "purchased_at", "expires_at", "cooling_off_ends_at",
             "refund_rule", "ended_at", "purchase_seq")
CardRow = namedtuple("CardRow", CARD_COLS)
_CARD_TIMES = tuple(i for i, c in enumerate(CARD_COLS) if c.endswith("_at"))
CARD_SELECT = f"SELECT {', '.join(CARD_COLS)} FROM cards WHERE id = ?"

RDM_COLS = ("id", "card_id", "merchant_id", "consumer_id", "status", "units", "hold_amount", "release_amount",
            "created_at", "expires_at", "answered_at", "ledger_seq")
RdmRow = namedtuple("RdmRow", RDM_COLS)
_RDM_TIMES = tuple(i for i, c in enumerate(RDM_COLS) if c.endswith("_at"))
RDM_SELECT = f"SELECT {', '.join(RDM_COLS)} FROM redemptions WHERE id = ?"
# What an ask and an answer read first, each in one statement instead of two.
CARD_AND_MERCHANT_SELECT = (f"SELECT {', '.join('c.' + c for c in CARD_COLS)}, m.status FROM cards c "
                            "JOIN merchants m ON m.id = c.merchant_id WHERE c.id = ?")
RDM_AND_CARD_SELECT = (f"SELECT {', '.join('r.' + c for c in RDM_COLS)}, {', '.join('c.' + c for c in CARD_COLS)} "
                       "FROM redemptions r JOIN cards c ON c.id = r.card_id WHERE r.id = ?")


@lru_cache(maxsize=256)
def _sqlite_text(dt: datetime) -> str:
    if dt.tzinfo is not timezone.utc:
        dt = dt.astimezone(timezone.utc)
    return dt.replace(tzinfo=None).isoformat(" ", "microseconds")  # as strftime("%Y-%m-%d %H:%M:%S.%f")


@lru_cache(maxsize=4096)
def _parse_sqlite_text(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


class Raw:
    """Driver-level access inside the writer's transaction."""

    __slots__ = ("_cursor", "is_pg", "_sql")

    def __init__(self, dbapi_connection, is_pg: bool):
        self._cursor = dbapi_connection.cursor()
        self.is_pg = is_pg
        self._sql: dict[str, str] = {}

    def _convert(self, sql: str) -> str:
        if not self.is_pg:
            return sql
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return converted

    def one(self, sql: str, params: tuple = ()) -> tuple | None:
        cur = self._cursor
        cur.execute(self._convert(sql), params)
        return cur.fetchone()

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        cur = self._cursor
        cur.execute(self._convert(sql), params)
        return cur.fetchall()

    def run(self, sql: str, params: tuple = ()) -> int:
        cur = self._cursor
        cur.execute(self._convert(sql), params)
        return cur.rowcount

    def many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self._cursor.executemany(self._convert(sql), rows)

    # Times: SQLAlchemy keeps SQLite datetimes as naive UTC text with microseconds. A write batch binds
    # its one `now` many times, and reads the same few card times again and again: both are memoised.
    def t(self, dt: datetime | None):
        if dt is None or self.is_pg:
            return dt
        return _sqlite_text(dt)

    def pt(self, value) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return _parse_sqlite_text(value)
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)

    def card(self, card_id: str) -> CardRow | None:
        row = self.one(CARD_SELECT, (card_id,))
        return None if row is None else self._card_row(row)

    def card_and_merchant_status(self, card_id: str) -> tuple[CardRow, str] | None:
        """The card and its merchant's status (one statement)."""
        row = self.one(CARD_AND_MERCHANT_SELECT, (card_id,))
        return None if row is None else (self._card_row(row[:-1]), row[-1])

    def redemption(self, redemption_id: str) -> RdmRow | None:
        row = self.one(RDM_SELECT, (redemption_id,))
        return None if row is None else self._rdm_row(row)

    def redemption_and_card(self, redemption_id: str) -> tuple[RdmRow, CardRow] | None:
        """The redemption and its card (one statement)."""
        row = self.one(RDM_AND_CARD_SELECT, (redemption_id,))
        if row is None:
            return None
        n = len(RDM_COLS)
        return self._rdm_row(row[:n]), self._card_row(row[n:])

    def _card_row(self, row) -> CardRow:
        row = list(row)
        for i in _CARD_TIMES:
            row[i] = self.pt(row[i])
        return CardRow(*row)

    def _rdm_row(self, row) -> RdmRow:
        row = list(row)
        for i in _RDM_TIMES:
            row[i] = self.pt(row[i])
        return RdmRow(*row)
