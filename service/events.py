"""Hooks where money events reach the risk module (health codes follow events, SPEC §3).

Each is called inside the same transaction as the money movement it reports.
"""

from __future__ import annotations

from service.db.writer import Tx


async def card_purchased(tx: Tx, merchant_id: str, amount: int) -> None:
    return None


async def card_refunded(tx: Tx, merchant_id: str, amount: int, merchant_share: int) -> None:
    return None


async def redemption_asked(tx: Tx, merchant_id: str) -> None:
    return None


async def redemption_answered(tx: Tx, merchant_id: str, status: str, released: int) -> None:
    return None
