"""The second half of a split ledger walk, run as its own process (`python -m ...verify_worker`).

It reads entries [start, end) from the database, checks them from the chain head stored just before
`start`, and prints one JSON line: the outcome, the range's Merkle root and chain head, roots at the
snapshot sizes asked for, and the money each card's entries state. See `service.ledger_api.service`.
"""

from __future__ import annotations

import sys

import orjson
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from ledger.verify import verify_chain
from service.db.engine import sync_url


def walk_range(url: str, start: int, end: int, snapshots: list[int], check_sums: bool) -> dict:
    from service.ledger_api.service import CHUNK, Sums, _snapshot_cursor
    engine = create_engine(sync_url(url), poolclass=NullPool)
    is_pg = engine.dialect.name == "postgresql"
    sums = Sums()
    try:
        with engine.connect() as sa_conn:
            dbapi = sa_conn.connection.dbapi_connection
            cur = _snapshot_cursor(dbapi, is_pg)
            p = "%s" if is_pg else "?"
            cur.execute(f"SELECT chain_hash FROM ledger_entries WHERE seq = {p}", (start - 1,))
            row = cur.fetchone()
            if row is None:
                return {"ok": False, "size": start - 1, "bad_seq": start - 1, "reason": "missing entry (gap)",
                        "head": "", "root": "", "snapshots": {}, "sums": {}}
            entries = dbapi.cursor(name="ledger_walk_tail") if is_pg else dbapi.cursor()
            entries.execute(f"SELECT seq, canonical, leaf_hash, chain_hash FROM ledger_entries "
                            f"WHERE seq >= {p} AND seq < {p} ORDER BY seq", (start, end))

            def rows():
                while True:
                    chunk = entries.fetchmany(CHUNK)
                    if not chunk:
                        return
                    if check_sums:
                        for r in chunk:
                            sums.add(r[1])
                    yield from chunk

            report = verify_chain(rows(), None, 100_000, snapshots, start_seq=start, start_head=bytes(row[0]))
            entries.close()
            cur.execute("ROLLBACK")
    finally:
        engine.dispose()
    return {"ok": report.ok, "size": report.size, "bad_seq": report.bad_seq, "reason": report.reason,
            "head": report.head.hex(), "root": report.root.hex(),
            "snapshots": {str(k): [r.hex(), h.hex()] for k, (r, h) in report.snapshots.items()},
            "sums": dict(sums.cards)}


if __name__ == "__main__":
    spec = orjson.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(orjson.dumps(walk_range(spec["url"], spec["start"], spec["end"], spec["snapshots"],
                                                    spec["check_sums"])))
