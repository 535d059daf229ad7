"""The chunked walk (Python comprehensions, and the C inner loop when built) against the reference
entry-by-entry walk: same verdict, same bad seq and reason, same root, head and snapshots, for
every chunk size, start inside the ledger and tampering."""

from __future__ import annotations

import random

import pytest

from ledger import verify as verify_mod
from ledger.canonical import canonical_json
from ledger.hashing import GENESIS_HEAD, leaf_hash
from ledger.merkle import Frontier, root_from_leaves
from ledger.tests.test_receipt_and_chain import make_rows as rows_of
from ledger.verify import _Walk, verify_chain

PATHS = [False, True]


def entry(seq: int, rng: random.Random) -> bytes:
    body = {
        "seq": seq,
        "kind": rng.choice(["hold", "release", "purchase"]),
        "amount": rng.randrange(1, 10**6),
        "card_id": f"card_{rng.randrange(5)}",
        "memo": rng.choice(["核销", "a}b", '"seq":1', ""]),
    }
    if rng.random() < 0.1:
        body["zz"] = {"seq": seq}  # a nested seq after the top-level one: the full parse decides
    return canonical_json(body)


def reference(rows, snapshots, start_seq=0, start_head=GENESIS_HEAD):
    walk = _Walk(start_seq, start_head, snapshots)
    return walk.rows(rows)


def tamper(rows: list[tuple], rng: random.Random) -> list[tuple]:
    rows = list(rows)
    if not rows:
        return rows
    i = rng.randrange(len(rows))
    seq, canonical, leaf, chain = rows[i]
    how = rng.randrange(7)
    if how == 0:  # one amount changed
        rows[i] = (seq, canonical.replace(b'"amount":', b'"amount":9'), leaf, chain)
    elif how == 1:  # deleted
        del rows[i]
    elif how == 2 and len(rows) > 1:  # two rows swapped under their seq numbers
        j = rng.randrange(len(rows))
        rows[i], rows[j] = (seq, *rows[j][1:]), (rows[j][0], canonical, leaf, chain)
    elif how == 3:  # leaf recomputed, chain not
        changed = canonical.replace(b'"amount":', b'"amount":7')
        rows[i] = (seq, changed, leaf_hash(changed), chain)
    elif how == 4:  # stored chain hash flipped
        rows[i] = (seq, canonical, leaf, bytes([chain[0] ^ 1]) + chain[1:])
    elif how == 5:  # the entry states another seq
        changed = canonical.replace(b'"seq":%d' % seq, b'"seq":%d' % (seq + 1))
        rows[i] = (seq, changed, leaf_hash(changed), chain)
    else:  # text as str, as the drivers give a TEXT column
        rows[i] = (seq, canonical.decode("utf-8"), leaf, chain)
    return rows


@pytest.mark.parametrize("accelerated", PATHS)
def test_chunked_walk_matches_the_reference(accelerated):
    rng = random.Random(20261125)
    for trial in range(300):
        n = rng.randrange(0, 70)
        rows = rows_of([entry(i, rng) for i in range(n)])
        if rng.random() < 0.7:
            rows = tamper(rows, rng)
        snapshots = {rng.randrange(0, n + 2) for _ in range(rng.randrange(4))}
        chunk = rng.choice([1, 2, 3, 5, 8, 16, 64])
        want = reference(rows, snapshots)
        got = verify_chain(rows, snapshot_sizes=snapshots, chunk=chunk, accelerated=accelerated)
        assert (got.ok, got.size, got.bad_seq, got.reason) == (want.ok, want.size, want.bad_seq, want.reason), trial
        assert (got.root, got.head, got.snapshots) == (want.root, want.head, want.snapshots), trial


@pytest.mark.parametrize("accelerated", PATHS)
def test_walk_from_inside_the_ledger_and_roots_at_every_size(accelerated):
    rng = random.Random(7)
    rows = rows_of([entry(i, rng) for i in range(100)])
    leaves = [r[2] for r in rows]
    report = verify_chain(rows, snapshot_sizes=range(101), chunk=7, accelerated=accelerated)
    assert report.ok and report.root == root_from_leaves(leaves)
    for size in range(101):
        assert report.snapshots[size][0] == root_from_leaves(leaves[:size]), size
    # A walk from 64 (a power of two) with the head stored before it: the root of its range.
    tail = verify_chain(rows[64:], chunk=5, start_seq=64, start_head=rows[63][3], accelerated=accelerated)
    assert tail.ok and tail.size == 100 and tail.root == root_from_leaves(leaves[64:])


@pytest.mark.parametrize("accelerated", PATHS)
def test_progress_marks_each_step_once(accelerated):
    rng = random.Random(3)
    rows = rows_of([entry(i, rng) for i in range(50)])
    marks: list[int] = []
    assert verify_chain(rows, progress=marks.append, progress_every=10, chunk=7, accelerated=accelerated).ok
    assert marks == [10, 20, 30, 40, 50]


def test_c_inner_loop_is_built_and_its_perfect_root_equals_the_reference():
    # CI installs a compiler and libssl-dev, so the accelerator must be there (setup.py).
    assert verify_mod.ACCELERATED
    from ledger import _walk

    leaves = [leaf_hash(b"%d" % i) for i in range(64)]
    blob = b"".join(leaves)
    for lo, width in [(0, 1), (0, 64), (32, 32), (8, 8), (5, 1)]:
        assert _walk.perfect_root(blob, lo, width) == root_from_leaves(leaves[lo : lo + width])
    with pytest.raises(ValueError):
        _walk.perfect_root(blob, 0, 3)
    with pytest.raises(ValueError):
        _walk.perfect_root(blob, 60, 8)
    frontier = Frontier()
    for leaf in leaves:
        frontier.push(leaf)
    assert frontier.root() == _walk.perfect_root(blob, 0, 64)
