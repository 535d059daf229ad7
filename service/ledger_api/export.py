"""Export the ledger as JSON Lines for the custodian bank: one entry a line, in sequence order."""

from __future__ import annotations

from typing import BinaryIO

import orjson

from ledger.hashing import b64
from service.ledger_api import repository

CHUNK = 10_000


async def export_jsonl(engine, out: BinaryIO) -> int:
    after, n = -1, 0
    async with engine.connect() as conn:
        while True:
            rows = await repository.hashed_entries(conn, after, CHUNK)
            if not rows:
                return n
            for r in rows:
                out.write(
                    orjson.dumps(
                        {
                            "seq": int(r.seq),
                            "kind": r.kind,
                            "canonical": r.canonical,
                            "leaf_hash": b64(bytes(r.leaf_hash)),
                            "chain_hash": b64(bytes(r.chain_hash)),
                        }
                    )
                )
                out.write(b"\n")
            n += len(rows)
            after = int(rows[-1].seq)
