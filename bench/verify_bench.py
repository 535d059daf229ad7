"""Micro-benchmark (not a test): verify_chain throughput over synthetic ~250-byte entries.

python bench/verify_bench.py [N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: this tree's ledger/

from ledger.canonical import canonical_json
from ledger.hashing import GENESIS_HEAD, chain_hash, leaf_hash
from ledger.verify import verify_chain


def synthetic_rows(n: int) -> list[tuple[int, bytes, bytes, bytes]]:
    rows = []
    head = GENESIS_HEAD
    for seq in range(n):
        canonical = canonical_json(
            {
                "seq": seq,
                "kind": "hold",
                "time": "2025-06-01T12:34:56.789012Z",
                "card_id": f"card_{seq % 9973:012d}",
                "merchant_id": f"mer_{seq % 101:012d}",
                "consumer_id": f"con_{seq % 7919:012d}",
                "redemption_id": f"red_{seq:016d}",
                "amount": 12_800 + seq % 1000,
                "currency": "CNY",
                "memo": "核销 two-phase hold awaiting consumer confirmation",
            }
        )
        leaf = leaf_hash(canonical)
        head = chain_hash(head, leaf)
        rows.append((seq, canonical, leaf, head))
    return rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rows = synthetic_rows(n)
    avg = sum(len(r[1]) for r in rows) / n
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        report = verify_chain(rows)
        elapsed = time.perf_counter() - start
        assert report.ok, report
        best = max(best, n / elapsed)
    print(f"{n} entries of {avg:.0f} bytes: {best:,.0f} entries/s (best of 3)")


if __name__ == "__main__":
    main()
