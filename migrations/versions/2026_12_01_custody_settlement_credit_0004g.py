"""Custody: settlement batches and instructions, bank statements, lenders, credit consents

Revision ID: 0004g
Revises: 0004b
Create Date: 2026-12-01 22:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004g"
down_revision = "0004b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settlement_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("date", sa.String(length=10), nullable=False),
        sa.Column("payouts_total", sa.BigInteger(), nullable=False),
        sa.Column("refunds_total", sa.BigInteger(), nullable=False),
        sa.Column("payouts_count", sa.Integer(), nullable=False),
        sa.Column("refunds_count", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_batches")),
        sa.UniqueConstraint("date", name=op.f("uq_settlement_batches_date")),
    )
    op.create_table(
        "settlement_instructions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("card_id", sa.String(length=40), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=True),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("bank_reference", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_settlement_instructions_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_instructions")),
    )
    op.create_index("ix_settlement_instructions_batch", "settlement_instructions", ["batch_id", "id"], unique=False)
    op.create_index("ix_settlement_instructions_status", "settlement_instructions", ["status", "id"], unique=False)
    op.create_table(
        "bank_statements",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("date_from", sa.String(length=10), nullable=False),
        sa.Column("date_to", sa.String(length=10), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_statements")),
    )
    op.create_table(
        "lenders",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lenders")),
    )
    op.create_table(
        "credit_consents",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_credit_consents")),
    )


def downgrade() -> None:
    op.drop_table("credit_consents")
    op.drop_table("lenders")
    op.drop_table("bank_statements")
    op.drop_index("ix_settlement_instructions_status", table_name="settlement_instructions")
    op.drop_index("ix_settlement_instructions_batch", table_name="settlement_instructions")
    op.drop_table("settlement_instructions")
    op.drop_table("settlement_batches")
