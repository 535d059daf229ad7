"""The second half of a split ledger walk, run as its own process (`python -m ...verify_worker`).

It reads entries [start, end) from the database, checks them from the chain head stored just before
`start`, and prints one JSON line: the outcome, the range's Merkle root and chain head, roots at the
snapshot sizes asked for, and the money each card's entries state. See `service.ledger_api.service`.
It imports only the driver, `ledger` and `walk` (no SQLAlchemy), so it is running within ~0.1 s; its two
statements come with its task, made by the ledger repository in the process that started it.
"""

from __future__ import annotations

import sys

import orjson

from ledger.verify import verify_chunks
from service.ledger_api.walk import Sums, connect, entry_chunks, snapshot_cursor


def walk_range(
    url: str, start: int, end: int, snapshots: list[int], check_sums: bool, start_head: list, entries: list
) -> dict:
    """Walk [start, end): `start_head` reads the chain hash of entry start - 1 (`repository.chain_hash_at`),
    `entries` the range (`repository.walk_entries`), each as [sql, args]."""
    sums = Sums()
    dbapi, is_pg = connect(url)
    try:
        cur = snapshot_cursor(dbapi, is_pg)
        cur.execute(*start_head)
        row = cur.fetchone()
        if row is None:
            return {
                "ok": False,
                "size": start - 1,
                "bad_seq": start - 1,
                "reason": "missing entry (gap)",
                "head": "",
                "root": "",
                "snapshots": {},
                "sums": {},
            }
        chunks = entry_chunks(dbapi, is_pg, (entries[0], entries[1]), sums if check_sums else None)
        report = verify_chunks(chunks, None, 100_000, snapshots, start_seq=start, start_head=bytes(row[0]))
        cur.execute("ROLLBACK")
    finally:
        dbapi.close()
    return {
        "ok": report.ok,
        "size": report.size,
        "bad_seq": report.bad_seq,
        "reason": report.reason,
        "head": report.head.hex(),
        "root": report.root.hex(),
        "snapshots": {str(k): [r.hex(), h.hex()] for k, (r, h) in report.snapshots.items()},
        "sums": dict(sums.cards),
    }


if __name__ == "__main__":
    spec = orjson.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(
        orjson.dumps(walk_range(**spec))  # url, start, end, snapshots, check_sums, start_head, entries
    )
