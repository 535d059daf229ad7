"""Migration 0003 (ledger seq as SQLite's rowid) goes down and up again with the ledger intact."""

from __future__ import annotations

import asyncio
import sqlite3

from service.ops import migrate


def _schema(db: sqlite3.Connection) -> str:
    return db.execute("SELECT sql FROM sqlite_master WHERE name = 'ledger_entries'").fetchone()[0]


async def test_ledger_rowid_migration_round_trip(tmp_path):
    path = tmp_path / "m.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(migrate.upgrade, url)
    db = sqlite3.connect(path)
    rows = [
        (
            seq,
            "purchase",
            "2026-01-01 00:00:00.000000",
            f'{{"seq":{seq}}}',
            bytes([seq]) * 32,
            bytes([seq + 1]) * 32,
            f"card_{seq}",
        )
        for seq in (0, 1, 2)
    ]
    db.executemany(
        "INSERT INTO ledger_entries (seq, kind, time, canonical, leaf_hash, chain_hash, card_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    assert "seq INTEGER NOT NULL" in _schema(db)
    assert db.execute("SELECT COUNT(*) FROM ledger_entries WHERE rowid != seq").fetchone()[0] == 0  # seq is the rowid

    await asyncio.to_thread(migrate.downgrade, url, "0002")
    assert "seq BIGINT NOT NULL" in _schema(db)
    await asyncio.to_thread(migrate.upgrade, url)
    assert "seq INTEGER NOT NULL" in _schema(db)
    got = db.execute(
        "SELECT seq, kind, time, canonical, leaf_hash, chain_hash, card_id FROM ledger_entries ORDER BY seq"
    ).fetchall()
    assert got == rows
    indexes = {
        r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'ledger_entries' AND type = 'index'")
    }
    assert {"ix_ledger_card", "ix_ledger_consumer", "ix_ledger_merchant"} <= indexes
    db.close()
