"""Random inspection draw (双随机、一公开: random merchants and inspectors, public result).

This module owns `draw_inspections`. The draw is a pure function of its inputs and a
published seed, so anyone holding the seed, the merchant list with codes and the inspector
list can repeat it and get the same pairs. The exact procedure:

1. Each merchant's rank key is SHA-256("merchant" ‖ 0x00 ‖ seed ‖ 0x00 ‖ merchant_id), all
   strings UTF-8; ties (never seen in practice) break on merchant_id.
2. Per code, merchants are sorted by key and the first ceil(ratio_bp × n / 10000) are drawn,
   ratio from `policy.inspection_ratios` (defaults green 3%, yellow 10%, red 100%).
   Rounding up means every code with a non-zero ratio and at least one merchant gets inspected.
3. Drawn merchants are listed red first, then yellow, then green, each in key order.
4. Inspectors are shuffled by SHA-256("inspector" ‖ 0x00 ‖ seed ‖ 0x00 ‖ inspector) and
   dealt round-robin over that list, so work is spread evenly and the pairing is random too.

Sorting by hash rather than by input position is what makes the result independent of the
order the merchants and inspectors are given in. The seed must be fixed and published before
the merchant list is known (e.g. a future public value), or a drawer could try seeds until it
likes the result; that is the service's job, not this function's.
"""

from __future__ import annotations

import hashlib

from .policy import BP_WHOLE, Policy

_CODE_ORDER: tuple[str, ...] = ("red", "yellow", "green")  # worst first in the result


def _key(label: str, seed: str, item: str) -> bytes:
    return hashlib.sha256(label.encode() + b"\x00" + seed.encode() + b"\x00" + item.encode()).digest()


def draw_size(ratio_bp: int, count: int) -> int:
    """ceil(ratio_bp × count / 10000) in integers: how many of `count` merchants are drawn."""
    return (ratio_bp * count + BP_WHOLE - 1) // BP_WHOLE


def draw_inspections(
    merchants: list[tuple[str, str]],
    inspectors: list[str],
    policy: Policy,
    seed: str,
) -> list[tuple[str, str]]:
    """Draw merchants to inspect and pair each with an inspector.

    `merchants` are (merchant_id, code) pairs, code in green/yellow/red. Returns
    (merchant_id, inspector) pairs. Raises ValueError for an empty seed, an unknown code, a
    merchant or inspector listed twice, or no inspector when someone must be inspected.
    """
    if not isinstance(seed, str) or not seed:
        raise ValueError("seed must be a non-empty string")

    by_code: dict[str, list[str]] = {code: [] for code in _CODE_ORDER}
    seen: set[str] = set()
    for merchant_id, code in merchants:
        if code not in by_code:
            raise ValueError(f"merchant {merchant_id!r} has unknown code {code!r}")
        if merchant_id in seen:
            raise ValueError(f"merchant {merchant_id!r} is listed more than once")
        seen.add(merchant_id)
        by_code[code].append(merchant_id)

    if len(set(inspectors)) != len(inspectors):
        raise ValueError("an inspector is listed more than once")

    drawn: list[str] = []
    for code in _CODE_ORDER:
        ranked = sorted(by_code[code], key=lambda m: (_key("merchant", seed, m), m))
        drawn.extend(ranked[: draw_size(policy.inspection_ratios.ratio_bp(code), len(ranked))])

    if not drawn:
        return []
    if not inspectors:
        raise ValueError("no inspectors to assign the drawn merchants to")

    shuffled = sorted(inspectors, key=lambda i: (_key("inspector", seed, i), i))
    return [(m, shuffled[n % len(shuffled)]) for n, m in enumerate(drawn)]
