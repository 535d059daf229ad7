"""Ledger entries keyed by the rowid on SQLite

On SQLite a `BIGINT PRIMARY KEY` is a separate index beside the rowid, so a walk in seq order
looked every row up through that index (about 2.5 µs a row). `INTEGER PRIMARY KEY` makes seq the
rowid itself: the table is stored in seq order, the walk reads it straight through, and each
append writes one B-tree less. PostgreSQL keeps its BIGINT key; nothing changes there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 18:05:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = "seq, kind, time, canonical, leaf_hash, chain_hash, card_id, merchant_id, consumer_id"
INDEXES = (
    "CREATE INDEX ix_ledger_card ON ledger_entries (card_id, seq)",
    "CREATE INDEX ix_ledger_consumer ON ledger_entries (consumer_id, seq)",
    "CREATE INDEX ix_ledger_merchant ON ledger_entries (merchant_id, seq)",
)


def _rebuild(seq_type: str) -> None:
    op.execute(f"""CREATE TABLE ledger_entries_new (
        seq {seq_type} NOT NULL,
        kind VARCHAR(32) NOT NULL,
        time DATETIME NOT NULL,
        canonical TEXT NOT NULL,
        leaf_hash BLOB NOT NULL,
        chain_hash BLOB NOT NULL,
        card_id VARCHAR(40),
        merchant_id VARCHAR(40),
        consumer_id VARCHAR(40),
        CONSTRAINT pk_ledger_entries PRIMARY KEY (seq)
    )""")
    op.execute(f"INSERT INTO ledger_entries_new ({COLUMNS}) SELECT {COLUMNS} FROM ledger_entries ORDER BY seq")
    op.execute("DROP TABLE ledger_entries")
    op.execute("ALTER TABLE ledger_entries_new RENAME TO ledger_entries")
    for statement in INDEXES:
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("INTEGER")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("BIGINT")
