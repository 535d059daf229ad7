"""Reading the ledger back: full verification and the ledger-against-balances reconciliation.

`verify_ledger` walks every entry in sequence order (recomputing leaf hashes, the chain and the
Merkle root with `ledger.verify`), sums the money the entries state per card, and compares those
sums with the card balances. A changed, deleted or reordered entry is named by its sequence number.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from ledger.checkpoint import verify_checkpoint_json
from ledger.hashing import node_hash
from ledger.verify import ChainReport, verify_chunks
from service.db.engine import sync_url
from service.ledger_api import repository
from service.ledger_api.checkpoints import _out
from service.ledger_api.walk import Sums, absolute, connect, entry_chunks, snapshot_cursor

SPLIT_FROM = 200_000  # below this a single walk is quicker than starting a second process


def verify_ledger_sync(
    url: str,
    progress: Callable[[int], None] | None = None,
    check_sums: bool = True,
    public_key: bytes | None = None,
    split_from: int = SPLIT_FROM,
) -> dict:
    """Verify the chain, the stored head, the latest signed checkpoint and the per-card sums."""
    url = sync_url(url)
    dbapi, is_pg = connect(url)
    try:
        cur = snapshot_cursor(dbapi, is_pg)
        try:
            return _verify(dbapi, cur, is_pg, progress, check_sums, public_key, url, split_from)
        finally:
            cur.execute("ROLLBACK")
    finally:
        dbapi.close()


def _start_tail_walk(url: str, is_pg: bool, start: int, end: int, snapshots: list[int], check_sums: bool):
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.ledger_api.verify_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    task = {
        "url": absolute(url),
        "start": start,
        "end": end,
        "snapshots": snapshots,
        "check_sums": check_sums,
        "start_head": repository.chain_hash_at(is_pg, start - 1),
        "entries": repository.walk_entries(is_pg, start, end),
    }
    proc.stdin.write(orjson.dumps(task))
    proc.stdin.close()
    return proc


def _split_walk(
    chunks_until, url: str, is_pg: bool, n: int, progress, snapshot: list[int], check_sums: bool, sums: Sums
):
    """Walk [0, k) here and [k, n) in a second process, k the largest power of two below n: the two
    cores hash at once, and RFC 9162 makes the root of [0, n) H(0x01 || root[0,k) || root[k,n))."""
    k = 1 << ((n - 1).bit_length() - 1)
    tail = _start_tail_walk(url, is_pg, k, n, [m for m in snapshot if m > k], check_sums)
    left = verify_chunks(chunks_until(k), progress, 100_000, [m for m in snapshot if m <= k])
    out = tail.stdout.read()
    tail.wait()
    right = orjson.loads(out) if tail.returncode == 0 and out else None
    if not left.ok:
        return left
    if left.size != k:
        return ChainReport(False, left.size, left.head, left.root, left.size, "missing entry (gap)", left.snapshots)
    if right is None:
        raise RuntimeError("the second verification process failed")
    sums.merge(right["sums"])
    snaps = dict(left.snapshots)
    for m, (root, head) in right["snapshots"].items():
        snaps[int(m)] = (node_hash(left.root, bytes.fromhex(root)), bytes.fromhex(head))
    if not right["ok"]:
        return ChainReport(False, right["size"], left.head, left.root, right["bad_seq"], right["reason"], snaps)
    root = node_hash(left.root, bytes.fromhex(right["root"]))
    return ChainReport(True, right["size"], bytes.fromhex(right["head"]), root, None, None, snaps)


def _verify(
    dbapi,
    cur,
    is_pg: bool,
    progress,
    check_sums: bool,
    public_key: bytes | None,
    url: str = "",
    split_from: int = SPLIT_FROM,
) -> dict:
    head_row = repository.head_row(cur)
    cp_row = repository.latest_checkpoint(cur)
    snapshot = [int(cp_row.tree_size)] if cp_row is not None else []
    sums = Sums()
    n_head = int(head_row[0]) if head_row else 0
    beyond = repository.entries_from(cur, is_pg, n_head) if head_row is not None else 0

    def chunks_until(limit: int | None):
        return entry_chunks(dbapi, is_pg, repository.walk_entries(is_pg, None, limit), sums if check_sums else None)

    if url and n_head >= split_from and beyond == 0 and n_head > 1:
        report = _split_walk(chunks_until, url, is_pg, n_head, progress, snapshot, check_sums, sums)
    else:
        report = verify_chunks(chunks_until(None), progress, 100_000, snapshot)
    problems: list[str] = []
    result = {
        "ok": report.ok,
        "size": report.size,
        "chain_head": report.head.hex(),
        "root_hash": report.root.hex(),
        "bad_seq": report.bad_seq,
        "reason": report.reason,
    }
    if report.ok and head_row is not None:
        if int(head_row[0]) != report.size:
            problems.append(f"ledger head says {head_row[0]} entries, found {report.size}")
            result["bad_seq"] = min(int(head_row[0]), report.size)
        elif bytes(head_row[1]) != report.head:
            problems.append("stored chain head differs from the recomputed one")
    checks: list[str] = []
    if cp_row is not None and report.ok:
        size = int(cp_row.tree_size)
        got = report.snapshots.get(size)
        if got is None:
            problems.append(f"the latest checkpoint states {size} entries but the ledger has {report.size}")
            result["bad_seq"] = report.size
        elif (got[0], got[1]) != (bytes(cp_row.root_hash), bytes(cp_row.chain_head)):
            problems.append(
                f"the signed checkpoint at size {size} does not match the recomputed root and chain head "
                "(history was rewritten)"
            )
        if public_key is not None:
            try:
                verify_checkpoint_json(_out(cp_row), public_key)
                checks.append(f"checkpoint at size {size} signed by the platform key, root and chain head match")
            except ValueError as exc:
                problems.append(f"the latest checkpoint's signature does not verify: {exc}")
    result["checks"] = checks
    if check_sums and report.ok:
        seen = set()
        for card_id, price, released, refunded, held in repository.card_balances(cur):
            seen.add(card_id)
            s = sums.cards.get(card_id, [0, 0, 0, 0])
            if s != [price, released, refunded, held]:
                problems.append(
                    f"card {card_id}: ledger says paid {s[0]} released {s[1]} refunded {s[2]} held {s[3]}, "
                    f"balance says {price}/{released}/{refunded}/{held}"
                )
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


async def verify_ledger(
    engine, progress: Callable[[int], None] | None = None, check_sums: bool = True, public_key: bytes | None = None
) -> dict:
    """`verify_ledger_sync` on a worker thread, for the database `engine` points at."""
    url = engine.url.render_as_string(hide_password=False)
    return await asyncio.to_thread(verify_ledger_sync, url, progress, check_sums, public_key)
