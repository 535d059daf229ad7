"""Where money events reach the risk module (health codes follow events, SPEC §3).

Each hook runs inside the same transaction as the money movement it reports, so a purchase, its
ledger entry and the merchant's new code land together or not at all.
"""

from __future__ import annotations

from service.db.writer import Tx
from service.health import service as health


async def record(tx: Tx, merchant_id: str, **deltas: int) -> None:
    if tx.risk_events:  # off only in benchmarks (ESCROW_RISK_INCREMENTAL=false)
        await health.record(tx, merchant_id, **deltas)


async def card_purchased(tx: Tx, merchant_id: str, amount: int) -> None:
    await record(tx, merchant_id, issued=amount, cards_sold=1)


async def card_refunded(
    tx: Tx, merchant_id: str, amount: int, merchant_share: int, consumer_id: str | None = None
) -> None:
    await record(tx, merchant_id, refunded=amount, released=merchant_share)
    if tx.risk_events and consumer_id is not None:
        health.record_consumer(tx, merchant_id, consumer_id, "refund")


async def redemption_asked(tx: Tx, merchant_id: str) -> None:
    await record(tx, merchant_id, redemptions_asked=1)


async def redemption_answered(
    tx: Tx, merchant_id: str, status: str, released: int, consumer_id: str | None = None
) -> None:
    if status == "confirmed":
        await record(tx, merchant_id, released=released)
    elif status == "rejected":
        await record(tx, merchant_id, redemptions_rejected=1)
        if tx.risk_events and consumer_id is not None:
            health.record_consumer(tx, merchant_id, consumer_id, "reject")


async def complaint_filed(tx: Tx, merchant_id: str) -> None:
    await record(tx, merchant_id, complaints=1)


async def complaint_changed(tx: Tx, merchant_id: str) -> None:
    await record(tx, merchant_id)
