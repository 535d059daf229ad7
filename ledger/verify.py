"""Whole-ledger walk: recompute every leaf hash, the hash chain and the Merkle root.

Stops at the first bad entry and names it by sequence number. Written for
speed (one pass, hashlib directly, the Frontier append inlined) because it
runs over the entire journal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

import orjson

from .hashing import GENESIS_HEAD
from .merkle import Frontier

__all__ = ["ChainReport", "verify_chain", "entry_seq"]

Row = tuple[int, "bytes | str", bytes, bytes]  # (seq, canonical, leaf_hash, chain_hash)


@dataclass
class ChainReport:
    ok: bool
    size: int  # entries that verified
    head: bytes  # chain head after the last verified entry
    root: bytes  # Merkle root over the verified entries
    bad_seq: int | None = None
    reason: str | None = None
    # (root, head) at each requested size, to compare with stored checkpoints.
    snapshots: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)


def entry_seq(canonical: bytes) -> int | None:
    """The top-level integer "seq" of a canonical entry, or None if it has none."""
    try:
        body = orjson.loads(canonical)
    except orjson.JSONDecodeError:
        return None
    seq = body.get("seq") if isinstance(body, dict) else None
    return seq if type(seq) is int else None


def verify_chain(
    rows: Iterable[Row],
    progress: Callable[[int], None] | None = None,
    progress_every: int = 100_000,
    snapshot_sizes: Collection[int] = (),
    start_seq: int = 0,
    start_head: bytes = GENESIS_HEAD,
) -> ChainReport:
    """Verify rows (seq, canonical, leaf_hash, chain_hash) given in seq order.

    The leaf hash binds the exact text, the chain binds the order, and the
    returned root is what a checkpoint at `size` must state.

    A walk may start inside the ledger (`start_seq`, with the chain head stored
    just before it): the roots it reports are then of the range it walked, and
    snapshot sizes stay absolute. Two such walks split at a power of two make the
    whole tree's root as H(0x01 || left || right) (RFC 9162 §2.1.1).
    """
    leaf_prefix = hashlib.sha256(b"\x00")
    node_prefix = hashlib.sha256(b"\x01")
    sha256 = hashlib.sha256
    edge: list[bytes] = []  # Frontier's right edge, appended inline for speed
    pop, push = edge.pop, edge.append
    wanted = frozenset(snapshot_sizes)
    snapshots: dict[int, tuple[bytes, bytes]] = {}
    head = start_head
    expected = start_seq
    count = 0  # leaves walked: the Frontier is of the walked range

    def root() -> bytes:
        frontier = Frontier()
        frontier.size, frontier._edge = count, list(edge)
        return frontier.root()

    def fail(bad_seq: int, reason: str) -> ChainReport:
        return ChainReport(False, expected, head, root(), bad_seq, reason, snapshots)

    if start_seq in wanted:
        snapshots[start_seq] = (root(), head)
    for seq, canonical, stored_leaf, stored_chain in rows:
        if seq != expected:
            if seq > expected:
                return fail(expected, "missing entry (gap)")
            return fail(seq, "seq out of order or duplicated")
        if canonical.__class__ is not bytes:  # str, or memoryview from some drivers
            canonical = canonical.encode("utf-8") if isinstance(canonical, str) else bytes(canonical)
        # The entry must state its own seq. In compact JSON `"seq":` cannot sit
        # inside a string (its quotes would be escaped), and if no `}` follows it
        # before the last one it is a top-level key: a text check suffices there.
        # Anything else is settled by a full parse.
        i = canonical.rfind(b'"seq":')
        digits = b"%d" % seq
        end = i + 6 + len(digits)
        if not (
            i > 0
            and canonical[i + 6 : end] == digits
            and canonical[end : end + 1] in (b",", b"}")
            and canonical.find(b"}", i, -1) < 0
        ) and entry_seq(canonical) != seq:
            return fail(seq, "seq mismatch")
        h = leaf_prefix.copy()
        h.update(canonical)
        leaf = h.digest()
        if leaf != stored_leaf:
            return fail(seq, "leaf hash mismatch")
        next_head = sha256(head + leaf).digest()
        if next_head != stored_chain:
            return fail(seq, "chain hash mismatch")
        head = next_head
        # Frontier.push: each trailing 1-bit of the old size is a subtree this leaf completes.
        n = count
        while n & 1:
            h = node_prefix.copy()
            h.update(pop())
            h.update(leaf)
            leaf = h.digest()
            n >>= 1
        push(leaf)
        expected += 1
        count += 1
        if wanted and expected in wanted:
            snapshots[expected] = (root(), head)
        if progress is not None and expected % progress_every == 0:
            progress(expected)
    return ChainReport(True, expected, head, root(), None, None, snapshots)
