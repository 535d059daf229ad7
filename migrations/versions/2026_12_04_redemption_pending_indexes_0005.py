"""Redemptions: the indexes that held `status` hold only what needs it (issue 14)

`ix_redemptions_consumer (consumer_id, status, id)` moved an entry on every confirm (its status
changed), and `ix_redemptions_card (card_id, status)` too; both sat in large trees spread over every
consumer and card, so each ask and each confirm dirtied a page of each (bench/README.md, stop 23:
within the run-to-run noise when measured against the old build, interleaved). Now: `(consumer_id, id)` for a
consumer's redemptions of any status (a confirm leaves it alone), and two partial indexes over the
pending ones only, small enough to stay a few pages: the consumer's pending inbox and a card's
pending holds (what an ask and a refund look up). The sweeper's `(status, expires_at)` becomes
`(expires_at)` over the pending ones too.

Revision ID: 0005
Revises: 0004c
Create Date: 2026-12-04 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004c"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_redemptions_consumer", table_name="redemptions")
    op.drop_index("ix_redemptions_card", table_name="redemptions")
    op.create_index("ix_redemptions_consumer", "redemptions", ["consumer_id", "id"])
    op.create_index(
        "ix_redemptions_consumer_pending",
        "redemptions",
        ["consumer_id", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_redemptions_card_pending",
        "redemptions",
        ["card_id", "expires_at"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.drop_index("ix_redemptions_pending_expiry", table_name="redemptions")
    op.create_index(
        "ix_redemptions_pending_expiry", "redemptions", ["expires_at"], sqlite_where=PENDING, postgresql_where=PENDING
    )


def downgrade() -> None:
    op.drop_index("ix_redemptions_pending_expiry", table_name="redemptions")
    op.create_index("ix_redemptions_pending_expiry", "redemptions", ["status", "expires_at"])
    op.drop_index("ix_redemptions_card_pending", table_name="redemptions")
    op.drop_index("ix_redemptions_consumer_pending", table_name="redemptions")
    op.drop_index("ix_redemptions_consumer", table_name="redemptions")
    op.create_index("ix_redemptions_card", "redemptions", ["card_id", "status"])
    op.create_index("ix_redemptions_consumer", "redemptions", ["consumer_id", "status", "id"])
