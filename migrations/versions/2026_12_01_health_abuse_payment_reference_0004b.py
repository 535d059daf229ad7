"""No one party moves a health code; a payment reference funds one card (issue 12, part B)

- `complaints.card_holder`: whether the consumer held or had held a card of the merchant when filing
  (only such complaints count under the default policy); backfilled from the cards bought before
  each complaint. An index on (merchant_id, created_at) lets a re-assessment count a window's
  complaints without reading the merchant's older ones.
- `merchant_consumer_days`: which consumers refunded or rejected at a merchant on a day, so the
  refund and rejection rates are judged by distinct consumers; backfilled from refunded cards and
  rejected redemptions.
- `uq_cards_payment`: (payment_method, payment_reference) unique across cards. The upgrade stops
  with a list of the duplicates if the database already holds some: each is a payment that funded
  more than one card, which a person must reconcile with the bank before the index can exist.

Revision ID: 0004b
Revises: 0004d
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004b"
down_revision = "0004d"
branch_labels = None
depends_on = None

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _day(value) -> int:
    if isinstance(value, str):  # SQLite hands back text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH).days


def upgrade() -> None:
    bind = op.get_bind()
    dupes = bind.execute(
        sa.text(
            "SELECT payment_method, payment_reference, COUNT(*) FROM cards GROUP BY payment_method, payment_reference "
            "HAVING COUNT(*) > 1 ORDER BY payment_method, payment_reference"
        )
    ).fetchall()
    if dupes:
        listed = "; ".join(f"{m} {r!r} funds {n} cards" for m, r, n in dupes[:20])
        raise RuntimeError(
            f"cannot make payment references unique: {len(dupes)} reference(s) fund more than one card "
            f"({listed}). Reconcile them with the bank, then run the migration again."
        )
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.create_index("uq_cards_payment", ["payment_method", "payment_reference"], unique=True)

    with op.batch_alter_table("complaints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("card_holder", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index("ix_complaints_merchant_time", ["merchant_id", "created_at"], unique=False)
    bind.execute(
        sa.text(
            "UPDATE complaints SET card_holder = EXISTS (SELECT 1 FROM cards WHERE cards.consumer_id = complaints.consumer_id "
            "AND cards.merchant_id = complaints.merchant_id AND cards.purchased_at <= complaints.created_at)"
        )
    )

    op.create_table(
        "merchant_consumer_days",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("consumer_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "kind", "day", "consumer_id", name=op.f("pk_merchant_consumer_days")),
    )
    rows = set()
    for m, c, t in bind.execute(
        sa.text(
            "SELECT merchant_id, consumer_id, ended_at FROM cards WHERE status = 'refunded' AND ended_at IS NOT NULL"
        )
    ):
        rows.add((m, "refund", _day(t), c))
    for m, c, t in bind.execute(
        sa.text(
            "SELECT merchant_id, consumer_id, answered_at FROM redemptions "
            "WHERE status = 'rejected' AND answered_at IS NOT NULL"
        )
    ):
        rows.add((m, "reject", _day(t), c))
    if rows:
        table = sa.table(
            "merchant_consumer_days",
            sa.column("merchant_id"),
            sa.column("kind"),
            sa.column("day"),
            sa.column("consumer_id"),
        )
        op.bulk_insert(table, [dict(merchant_id=m, kind=k, day=d, consumer_id=c) for m, k, d, c in sorted(rows)])


def downgrade() -> None:
    op.drop_table("merchant_consumer_days")
    with op.batch_alter_table("complaints", schema=None) as batch_op:
        batch_op.drop_index("ix_complaints_merchant_time")
        batch_op.drop_column("card_holder")
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_index("uq_cards_payment")
