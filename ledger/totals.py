"""What each ledger entry kind does to the money totals, written once.

The totals are `[paid_in, released, refunded, held]` in fen: per card in the verify walk
(`service/ledger_api/walk.py`), for the whole ledger in the writer's running sums (the ledger head,
`service/db/writer.py`). Escrow is what is left: paid_in - released - refunded.

| kind | paid_in | released | refunded | held |
|---|---|---|---|---|
| purchase | + amount | | | + held_delta |
| release | | + amount | | + held_delta |
| refund | | + merchant_share | + amount | + held_delta |
| hold, void, any other | | | | + held_delta |

A new entry kind that moves money gets its line here (and in the table), and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAID_IN, RELEASED, REFUNDED, HELD = range(4)


def new_totals() -> list[int]:
    return [0, 0, 0, 0]


def add_entry(totals: list[int], kind: str | None, fields: Mapping[str, Any]) -> None:
    """Add what one entry of `kind` with `fields` (its canonical body, or the fields it is appended
    with) does to `totals`, in place."""
    if kind == "purchase":
        totals[PAID_IN] += fields["amount"]
    elif kind == "release":
        totals[RELEASED] += fields["amount"]
    elif kind == "refund":
        totals[REFUNDED] += fields["amount"]
        totals[RELEASED] += fields.get("merchant_share", 0)
    totals[HELD] += fields.get("held_delta", 0)


def as_dict(totals: list[int]) -> dict[str, int]:
    """The totals by name, with the escrow they leave."""
    paid_in, released, refunded, held = totals
    return {
        "paid_in": paid_in,
        "released": released,
        "refunded": refunded,
        "held": held,
        "escrow": paid_in - released - refunded,
    }
