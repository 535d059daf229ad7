"""Whole-ledger walk: recompute every leaf hash, the hash chain and the Merkle root.

Stops at the first bad entry and names it by sequence number. The walk entry
by entry (`_Walk.rows`) is the reference. It runs over the entire journal, and
in Python hashlib's per-call cost bounds it near 300,000 entries/s a core, so
when the optional C module `ledger._walk` was built a whole chunk is checked
by it at once (seq, leaf hash, chain link, then the Merkle nodes over aligned
power-of-two blocks); a chunk it has any doubt about is walked again entry by
entry from the state before it, which names the first bad entry and what is
wrong. tests/test_walk_paths.py holds the two paths to the same reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice

import orjson

from .hashing import GENESIS_HEAD
from .merkle import Frontier

try:  # the optional C inner loop (ledger/_walk.c); the Python below is the reference
    from . import _walk  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # pragma: no cover - not built on this machine
    _walk = None

ACCELERATED = _walk is not None

__all__ = ["ChainReport", "verify_chain", "verify_chunks", "entry_seq"]

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
    chunk: int = 16_384,
    accelerated: bool = ACCELERATED,
) -> ChainReport:
    """Verify rows (seq, canonical, leaf_hash, chain_hash) given in seq order.

    The leaf hash binds the exact text, the chain binds the order, and the
    returned root is what a checkpoint at `size` must state.

    A walk may start inside the ledger (`start_seq`, with the chain head stored
    just before it): the roots it reports are then of the range it walked, and
    snapshot sizes stay absolute. Two such walks split at a power of two make the
    whole tree's root as H(0x01 || left || right) (RFC 9162 §2.1.1).
    """
    it = iter(rows)
    chunks = iter(lambda: list(islice(it, chunk)), [])
    return verify_chunks(chunks, progress, progress_every, snapshot_sizes, start_seq, start_head, accelerated)


def verify_chunks(
    chunks: Iterable[Sequence[Row]],
    progress: Callable[[int], None] | None = None,
    progress_every: int = 100_000,
    snapshot_sizes: Collection[int] = (),
    start_seq: int = 0,
    start_head: bytes = GENESIS_HEAD,
    accelerated: bool = ACCELERATED,
) -> ChainReport:
    """`verify_chain` over rows already grouped in chunks (as a driver's `fetchmany` gives them).

    `accelerated` uses the C inner loop when it was built (same checks, same report).
    """
    walk = _Walk(start_seq, start_head, snapshot_sizes)
    fast = accelerated and _walk is not None
    for rows in chunks:
        before = walk.expected
        if not (fast and walk.chunk(rows)):
            report = walk.rows(rows)
            if not report.ok:
                return report
        if progress is not None:
            for mark in range(before - before % progress_every + progress_every, walk.expected + 1, progress_every):
                progress(mark)
    return walk.report()


_LEAF = hashlib.sha256(b"\x00")
_NODE = hashlib.sha256(b"\x01")


def _seq_stated(canonical: bytes, seq: int) -> bool:
    """Whether the entry states its own seq as a top-level key.

    In compact JSON `"seq":` cannot sit inside a string (its quotes would be
    escaped), and if no `}` follows it before the last one it is a top-level key:
    a text check suffices there. Anything else is settled by a full parse.
    """
    i = canonical.rfind(b'"seq":')
    digits = b"%d" % seq
    end = i + 6 + len(digits)
    if (
        i > 0
        and canonical[i + 6 : end] == digits
        and canonical[end : end + 1] in (b",", b"}")
        and canonical.find(b"}", i, -1) < 0
    ):
        return True
    return entry_seq(canonical) == seq


class _Walk:
    """State of a walk: next seq, chain head, and the Merkle right edge of the walked range."""

    def __init__(self, start_seq: int, start_head: bytes, snapshot_sizes: Collection[int]) -> None:
        self.expected = start_seq
        self.head = start_head
        self.count = 0  # leaves walked: the edge is of the walked range
        self.edge: list[bytes] = []  # one perfect-subtree hash per set bit of count, largest first
        self.wanted = frozenset(snapshot_sizes)
        self.snapshots: dict[int, tuple[bytes, bytes]] = {}
        if start_seq in self.wanted:
            self.snapshots[start_seq] = (self.root(), self.head)

    def root(self) -> bytes:
        frontier = Frontier()
        frontier.size, frontier._edge = self.count, list(self.edge)
        return frontier.root()

    def report(self, bad_seq: int | None = None, reason: str | None = None) -> ChainReport:
        return ChainReport(bad_seq is None, self.expected, self.head, self.root(), bad_seq, reason, self.snapshots)

    # ------------------------------------------------------------ a chunk at once (C)

    def chunk(self, rows: Sequence[Row]) -> bool:
        """Check and take a whole chunk with ledger._walk; False (state untouched) at the first doubt."""
        if not rows:
            return True
        if rows.__class__ is not list:
            rows = list(rows)
        leaves = _walk.check_chunk(rows, self.expected, self.head)
        if leaves is None:
            return False
        start, n = self.expected, len(rows)
        cuts = sorted(m for m in self.wanted if start < m <= start + n) if self.wanted else []
        lo = 0
        perfect_root = _walk.perfect_root
        for m in [*cuts, start + n]:
            hi = m - start
            self._push_blocks(lambda a, width: perfect_root(leaves, a, width), lo, hi)
            lo = hi
            self.expected = m
            self.head = bytes(rows[hi - 1][3])
            if m in self.wanted:
                self.snapshots[m] = (self.root(), self.head)
        return True

    def _push_blocks(self, block_root: Callable[[int, int], bytes], lo: int, hi: int) -> None:
        """Add leaves [lo, hi) of a chunk as aligned power-of-two blocks, each hashed by `block_root`."""
        sha256 = hashlib.sha256
        edge = self.edge
        while lo < hi:
            count = self.count
            # The largest block that starts here aligned (count is a multiple of its width) and fits.
            level = (hi - lo).bit_length() - 1
            if count:
                level = min(level, (count & -count).bit_length() - 1)
            width = 1 << level
            node = block_root(lo, width)
            k = count >> level
            while k & 1:
                node = sha256(b"\x01" + edge.pop() + node).digest()
                k >>= 1
            edge.append(node)
            self.count = count + width
            lo += width

    # ------------------------------------------------------------ entry by entry

    def rows(self, rows: Iterable[Row]) -> ChainReport:
        """Walk rows one at a time; the report names the first bad entry (ok=True if none is)."""
        leaf_prefix, node_prefix, sha256 = _LEAF, _NODE, hashlib.sha256
        edge = self.edge
        pop, push = edge.pop, edge.append
        wanted = self.wanted
        for seq, canonical, stored_leaf, stored_chain in rows:
            expected = self.expected
            if seq != expected:
                if seq > expected:
                    return self.report(expected, "missing entry (gap)")
                return self.report(seq, "seq out of order or duplicated")
            if canonical.__class__ is not bytes:  # str, or memoryview from some drivers
                canonical = canonical.encode("utf-8") if isinstance(canonical, str) else bytes(canonical)
            if not _seq_stated(canonical, seq):
                return self.report(seq, "seq mismatch")
            h = leaf_prefix.copy()
            h.update(canonical)
            leaf = h.digest()
            if leaf != stored_leaf:
                return self.report(seq, "leaf hash mismatch")
            next_head = sha256(self.head + leaf).digest()
            if next_head != stored_chain:
                return self.report(seq, "chain hash mismatch")
            self.head = next_head
            # Frontier.push: each trailing 1-bit of the old size is a subtree this leaf completes.
            n = self.count
            while n & 1:
                h = node_prefix.copy()
                h.update(pop())
                h.update(leaf)
                leaf = h.digest()
                n >>= 1
            push(leaf)
            self.expected = expected + 1
            self.count += 1
            if wanted and expected + 1 in wanted:
                self.snapshots[expected + 1] = (self.root(), self.head)
        return self.report()
