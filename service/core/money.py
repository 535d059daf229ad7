"""The money rules of SPEC §2, written once: release shares, holds, refund valuations.

Every share is a cumulative floor: after k of n units, floor(k × price / n) has been released, so
splitting never loses or invents a fen and the last unit releases exactly what is left.
"""

from __future__ import annotations


def cumulative_release(price: int, units_total: int, units_used: int) -> int:
    """Principal released once `units_used` of `units_total` are consumed (fen)."""
    if not 0 <= units_used <= units_total or units_total <= 0:
        raise ValueError("units out of range")
    return units_used * price // units_total


def release_share(price: int, units_total: int, units_used: int, units: int) -> int:
    """Principal that moves to the merchant when `units` more are confirmed after `units_used`."""
    return cumulative_release(price, units_total, units_used + units) - cumulative_release(
        price, units_total, units_used
    )


def held_amount(price: int, units_total: int, units_used: int, units_held: int) -> int:
    """Escrow committed by pending holds: what they would release if all were confirmed."""
    return release_share(price, units_total, units_used, units_held)


def default_list_price(price: int, units_paid: int) -> int:
    """List price per use or period: the price over the paid units, rounded up (fen)."""
    return -(-price // units_paid)


def consumer_quit_refund(price: int, escrow: int, units_used: int, list_price: int) -> int:
    """Refund when the consumer quits after cooling-off: price less what was used at list price
    (SPC 法释〔2025〕4号 Art. 19: bonus use counts at list price), within [0, escrow]."""
    return max(0, min(escrow, price - units_used * list_price))
