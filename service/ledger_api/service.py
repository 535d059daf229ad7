"""Reading the ledger back: full verification and the ledger-against-balances reconciliation.

`verify_ledger` walks every entry in sequence order (recomputing leaf hashes, the chain and the
Merkle root with `ledger.verify`), sums the money the entries state per card, and compares those
sums with the card balances. A changed, deleted or reordered entry is named by its sequence number.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Callable

import orjson
from sqlalchemy import desc, select

from ledger.checkpoint import verify_checkpoint_json
from ledger.verify import verify_chain
from service.db.models import Card, Checkpoint, LedgerEntry, LedgerHead
from service.ledger_api.checkpoints import _out

entries_t = LedgerEntry.__table__
cards_t = Card.__table__
head_t = LedgerHead.__table__
cp_t = Checkpoint.__table__

CHUNK = 20_000


class Sums:
    """Money per card as the ledger states it."""

    def __init__(self) -> None:
        self.cards: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # paid_in, released, refunded, held

    def add(self, canonical: bytes) -> None:
        e = orjson.loads(canonical)
        kind = e.get("kind")
        card = e.get("card_id")
        if card is None:
            return
        s = self.cards[card]
        if kind == "purchase":
            s[0] += e["amount"]
        elif kind == "release":
            s[1] += e["amount"]
        elif kind == "refund":
            s[2] += e["amount"]
            s[1] += e.get("merchant_share", 0)
        s[3] += e.get("held_delta", 0)

    def totals(self) -> dict:
        t = [0, 0, 0, 0]
        for s in self.cards.values():
            for i in range(4):
                t[i] += s[i]
        return {"paid_in": t[0], "released": t[1], "refunded": t[2], "held": t[3], "escrow": t[0] - t[1] - t[2]}


async def _fetch(conn, after: int) -> list[tuple]:
    rows = (await conn.execute(
        select(entries_t.c.seq, entries_t.c.canonical, entries_t.c.leaf_hash, entries_t.c.chain_hash)
        .where(entries_t.c.seq > after).order_by(entries_t.c.seq).limit(CHUNK))).all()
    return [(int(r[0]), r[1].encode(), bytes(r[2]), bytes(r[3])) for r in rows]


async def verify_ledger(engine, progress: Callable[[int], None] | None = None, check_sums: bool = True,
                        public_key: bytes | None = None) -> dict:
    """Verify the chain, the stored head, the latest signed checkpoint and the per-card sums."""
    loop = asyncio.get_running_loop()
    sums = Sums()
    async with engine.connect() as conn:
        head_row = (await conn.execute(select(head_t.c.size, head_t.c.head).where(head_t.c.id == 1))).first()
        cp_row = (await conn.execute(select(cp_t).order_by(desc(cp_t.c.tree_size)).limit(1))).first()
        snapshot = [int(cp_row.tree_size)] if cp_row is not None else []

        def rows():
            after = -1
            while True:
                chunk = asyncio.run_coroutine_threadsafe(_fetch(conn, after), loop).result()
                if not chunk:
                    return
                for row in chunk:
                    if check_sums:
                        sums.add(row[1])
                    yield row
                after = chunk[-1][0]

        report = await asyncio.to_thread(verify_chain, rows(), progress, 100_000, snapshot)
        problems: list[str] = []
        result = {"ok": report.ok, "size": report.size, "chain_head": report.head.hex(), "root_hash": report.root.hex(),
                  "bad_seq": report.bad_seq, "reason": report.reason}
        if report.ok and head_row is not None:
            if int(head_row.size) != report.size:
                problems.append(f"ledger head says {head_row.size} entries, found {report.size}")
                result["bad_seq"] = min(int(head_row.size), report.size)
            elif bytes(head_row.head) != report.head:
                problems.append("stored chain head differs from the recomputed one")
        checks: list[str] = []
        if cp_row is not None and report.ok:
            size = int(cp_row.tree_size)
            got = report.snapshots.get(size)
            if got is None:
                problems.append(f"the latest checkpoint states {size} entries but the ledger has {report.size}")
                result["bad_seq"] = report.size
            elif (got[0], got[1]) != (bytes(cp_row.root_hash), bytes(cp_row.chain_head)):
                problems.append(f"the signed checkpoint at size {size} does not match the recomputed root and chain head "
                                "(history was rewritten)")
            if public_key is not None:
                try:
                    verify_checkpoint_json(_out(cp_row), public_key)
                    checks.append(f"checkpoint at size {size} signed by the platform key, root and chain head match")
                except ValueError as exc:
                    problems.append(f"the latest checkpoint's signature does not verify: {exc}")
        result["checks"] = checks
        if check_sums and report.ok:
            cards = (await conn.execute(select(cards_t.c.id, cards_t.c.price, cards_t.c.released, cards_t.c.refunded,
                                               cards_t.c.held))).all()
            seen = set()
            for c in cards:
                seen.add(c.id)
                s = sums.cards.get(c.id, [0, 0, 0, 0])
                if s != [c.price, c.released, c.refunded, c.held]:
                    problems.append(f"card {c.id}: ledger says paid {s[0]} released {s[1]} refunded {s[2]} held {s[3]}, "
                                    f"balance says {c.price}/{c.released}/{c.refunded}/{c.held}")
                    if len(problems) > 20:
                        break
            for card_id in set(sums.cards) - seen:
                problems.append(f"ledger has money entries for unknown card {card_id}")
            result["ledger_totals"] = sums.totals()
        if problems:
            result["ok"] = False
            result["reason"] = "; ".join(problems[:20]) if report.ok else result["reason"]
        result["problems"] = problems
        return result
