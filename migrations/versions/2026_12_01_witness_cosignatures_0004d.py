"""Witness cosignatures per checkpoint, and each witness's last known tree size

`witness_cosignatures` keeps the cosignature line each witness returned for a checkpoint (one row
per checkpoint and witness); `witness_state` keeps the size each witness last cosigned, shared by
every replica so they all send the same `old` size and one cosigned history results.

Revision ID: 0004d
Revises: 0004a
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004d"
down_revision = "0004a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "witness_cosignatures",
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("witness", sa.String(length=300), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("cosigned_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", "witness"),
    )
    op.create_table(
        "witness_state",
        sa.Column("witness", sa.String(length=300), nullable=False),
        sa.Column("last_size", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("retry_after_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("witness"),
    )


def downgrade() -> None:
    op.drop_table("witness_state")
    op.drop_table("witness_cosignatures")
