"""Phone verification and SMS outbox; token expiry for key rotation; idempotency callers of any length

- `phone_verifications`: one-time codes (only a keyed hash of each), attempts, expiry, use.
- `sms_outbox`: what the `outbox` SMS sender keeps instead of sending (development, test).
- `api_tokens.expires_at`: a rotated key keeps working until the grace its rotation named.
- `idempotency_keys.caller` VARCHAR(40) → VARCHAR(255): `anon:<IPv6 /64>` did not fit on PostgreSQL
  (SQLite does not enforce the length, so nothing changes there).

Revision ID: 0004a
Revises: 0003
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004a"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phone_verifications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("phone_lookup", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_phone_verifications_attempts_nonnegative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phone_verifications")),
    )
    op.create_index("ix_phone_verifications_phone", "phone_verifications", ["phone_lookup", "created_at"])
    op.create_table(
        "sms_outbox",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("phone_lookup", sa.String(length=64), nullable=False),
        sa.Column("phone_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_outbox")),
    )
    op.create_index("ix_sms_outbox_phone", "sms_outbox", ["phone_lookup", "id"])
    op.create_index("ix_sms_outbox_sent_at", "sms_outbox", ["sent_at"])
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "idempotency_keys",
            "caller",
            type_=sa.String(length=255),
            existing_type=sa.String(length=40),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # callers longer than the old column cannot be kept under it
        op.execute("DELETE FROM idempotency_keys WHERE length(caller) > 40")
        op.alter_column(
            "idempotency_keys",
            "caller",
            type_=sa.String(length=40),
            existing_type=sa.String(length=255),
            existing_nullable=False,
        )
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.drop_column("expires_at")
    op.drop_index("ix_sms_outbox_sent_at", table_name="sms_outbox")
    op.drop_index("ix_sms_outbox_phone", table_name="sms_outbox")
    op.drop_table("sms_outbox")
    op.drop_index("ix_phone_verifications_phone", table_name="phone_verifications")
    op.drop_table("phone_verifications")
