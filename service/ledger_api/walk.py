"""Reading the ledger for a whole walk, with the bare database driver: the connection, its one snapshot,
the streaming read of the entries a chunk at a time, and the per-card sums.

No SQLAlchemy and no service settings here: the second process of a split walk
(`verify_worker`) imports only this, the driver and `ledger`, so it starts in a
few tens of milliseconds instead of the better part of a second. The statements
it runs are the ledger repository's (`repository.walk_entries`), made by the
process that starts the walk.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator

import orjson

from ledger.totals import add_entry, as_dict, new_totals

CHUNK = 1 << 14  # a power of two: chunks stay aligned to whole Merkle subtrees


class Sums:
    """Money per card as the ledger states it."""

    def __init__(self) -> None:
        self.cards: dict[str, list[int]] = defaultdict(new_totals)  # paid_in, released, refunded, held

    def add(self, canonical: bytes) -> None:
        e = orjson.loads(canonical)
        card = e.get("card_id")
        if card is not None:
            add_entry(self.cards[card], e.get("kind"), e)

    def merge(self, other: dict[str, list[int]]) -> None:
        for card, s in other.items():
            mine = self.cards[card]
            for i in range(4):
                mine[i] += s[i]

    def totals(self) -> dict:
        t = new_totals()
        for s in self.cards.values():
            for i in range(4):
                t[i] += s[i]
        return as_dict(t)


def absolute(url: str) -> str:
    """The URL with a relative SQLite path made absolute, for a process started elsewhere."""
    scheme, _, rest = url.partition("://")
    if scheme.startswith("sqlite") and not rest.startswith("//"):
        path, q, query = rest[1:].partition("?")
        return f"{scheme}:///{os.path.abspath(path)}{q}{query}"
    return url


def connect(url: str):
    """(DB-API connection, is_pg) for a SQLAlchemy-style URL of either database, sync or async driver."""
    scheme, _, rest = url.partition("://")
    if scheme.startswith("sqlite"):
        import sqlite3

        path = rest[1:].partition("?")[0]  # sqlite:///relative or sqlite:////absolute
        return sqlite3.connect(path, isolation_level=None), False
    if scheme.startswith("postgresql"):
        import psycopg

        return psycopg.connect("postgresql://" + rest), True
    raise ValueError(f"unsupported database URL scheme {scheme!r}")


def snapshot_cursor(dbapi, is_pg: bool):
    """One read snapshot for the whole walk: entries, head, checkpoint and balances agree."""
    if is_pg:
        dbapi.rollback()
        cur = dbapi.cursor()
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    else:
        dbapi.isolation_level = None
        cur = dbapi.cursor()
        cur.execute("BEGIN")
    return cur


def entry_chunks(dbapi, is_pg: bool, statement: tuple[str, list], sums: Sums | None) -> Iterator[list]:
    """The rows `statement` (`repository.walk_entries`: seq, canonical bytes, leaf_hash, chain_hash, in seq
    order) reads, CHUNK at a time, adding each entry's money to `sums`."""
    sql, args = statement
    cur = dbapi.cursor(name="ledger_walk", binary=True) if is_pg else dbapi.cursor()  # bytea raw, not hex
    try:
        cur.execute(sql, args)
        fetch = cur.fetchmany
        while True:
            chunk = fetch(CHUNK)
            if not chunk:
                return
            if sums is not None:
                add = sums.add
                for row in chunk:
                    add(row[1])
            yield chunk
    finally:
        cur.close()
