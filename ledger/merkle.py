"""RFC 9162 Merkle tree over the ledger's leaf hashes, built from stored perfect subtrees.

The service stores every complete (perfect) subtree hash as it appears, keyed
(level, index): node (L, i) is the root over leaves [i·2^L, (i+1)·2^L), and
(0, i) is leaf i's hash. Stored nodes never change once written, so any past
tree size can be proved from them.

This module owns:
- `Frontier`: the right edge of the tree, for appending and the current root;
- proof *plans* (which stored nodes to fetch, in one query) and the assembly of
  inclusion/consistency proofs and past roots from the fetched nodes;
- verifiers exactly as RFC 9162 §2.1.3.2 and §2.1.4.2;
- `root_from_leaves` and friends: the reference recursive MTH, for tests.

Every range an RFC 9162 proof needs is a subtree of the MTH recursion, so it
starts at a multiple of its largest power-of-two piece: its hash is its
perfect pieces (binary decomposition of its width) folded from the right.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence

from .hashing import EMPTY_ROOT, HASH_SIZE, node_hash

__all__ = [
    "ProofError",
    "NodeId",
    "Frontier",
    "frontier_node_ids",
    "root_plan",
    "root_at",
    "inclusion_proof_plan",
    "inclusion_proof",
    "consistency_proof_plan",
    "consistency_proof",
    "verify_inclusion",
    "verify_consistency",
    "root_from_leaves",
    "inclusion_proof_from_leaves",
    "consistency_proof_from_leaves",
]

NodeId = tuple[int, int]  # (level, index)
Nodes = Mapping[NodeId, bytes]


class ProofError(ValueError):
    """A Merkle proof did not verify (or could not even be read)."""


# ---------------------------------------------------------------- ranges


def _split(width: int) -> int:
    """Largest power of two strictly below `width` (width >= 2): RFC 9162's k."""
    return 1 << ((width - 1).bit_length() - 1)


def _range_pieces(lo: int, hi: int) -> list[NodeId]:
    """Perfect subtrees covering [lo, hi), largest (leftmost) first."""
    pieces: list[NodeId] = []
    width = hi - lo
    while width:
        level = width.bit_length() - 1
        pieces.append((level, lo >> level))
        lo += 1 << level
        width -= 1 << level
    return pieces


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a subtree from its perfect pieces, left to right (folded from the right)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _range_hash(lo: int, hi: int, nodes: Nodes) -> bytes:
    try:
        return _fold([nodes[nid] for nid in _range_pieces(lo, hi)])
    except KeyError as exc:
        raise ValueError(f"stored node {exc.args[0]} missing for range [{lo}, {hi})") from None


def _plan(ranges: list[tuple[int, int]]) -> list[NodeId]:
    seen: dict[NodeId, None] = {}
    for lo, hi in ranges:
        for nid in _range_pieces(lo, hi):
            seen[nid] = None
    return list(seen)


# ---------------------------------------------------------------- frontier


def frontier_node_ids(size: int) -> list[NodeId]:
    """Stored nodes forming the right edge of a tree of `size` leaves, left to right."""
    if size < 0:
        raise ValueError(f"tree size must be >= 0, got {size}")
    return _range_pieces(0, size)


class Frontier:
    """Right edge of the tree: one perfect-subtree hash per set bit of `size`."""

    __slots__ = ("size", "_edge")

    def __init__(self) -> None:
        self.size = 0
        self._edge: list[bytes] = []  # left (largest subtree) to right

    @classmethod
    def from_nodes(cls, size: int, nodes: Nodes) -> Frontier:
        frontier = cls()
        try:
            frontier._edge = [nodes[nid] for nid in frontier_node_ids(size)]
        except KeyError as exc:
            raise ValueError(f"stored node {exc.args[0]} missing for frontier of size {size}") from None
        frontier.size = size
        return frontier

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the newly completed nodes (level, index, hash) to store."""
        index = self.size
        completed = [(0, index, leaf)]
        edge = self._edge
        acc = leaf
        level = 0
        # Each trailing 1-bit of the old size is a perfect subtree the new leaf completes.
        n = index
        while n & 1:
            acc = node_hash(edge.pop(), acc)
            level += 1
            n >>= 1
            completed.append((level, index >> level, acc))
        edge.append(acc)
        self.size = index + 1
        return completed

    def push(self, leaf: bytes) -> None:
        """`append` without reporting completed nodes (for bulk verification)."""
        edge = self._edge
        n = self.size
        self.size = n + 1
        while n & 1:
            leaf = node_hash(edge.pop(), leaf)
            n >>= 1
        edge.append(leaf)

    def root(self) -> bytes:
        """Root of the tree of the `size` leaves appended so far."""
        if not self._edge:
            return EMPTY_ROOT
        return _fold(self._edge)


# ---------------------------------------------------------------- roots


def root_plan(size: int) -> list[NodeId]:
    """Stored nodes needed for the root at `size`."""
    return frontier_node_ids(size)


def root_at(size: int, nodes: Nodes) -> bytes:
    """Root of the tree of the first `size` leaves."""
    if size < 0:
        raise ValueError(f"tree size must be >= 0, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(0, size, nodes)


# ---------------------------------------------------------------- inclusion


def _descend(leaf: int, size: int, stop_hi: int = -1) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """RFC 9162's recursion from [0, size) down toward `leaf`: the sibling range at each level (root side
    first), and the range where it stopped (the leaf itself, or the first range ending at `stop_hi`)."""
    siblings: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1 and hi != stop_hi:
        k = _split(hi - lo)
        if leaf < lo + k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
    return siblings, (lo, hi)


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Sibling ranges of RFC 9162 PATH(index, D[0:size]), in proof order (leaf upward)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} out of range for tree size {size}")
    siblings, _ = _descend(index, size)
    return siblings[::-1]


def inclusion_proof_plan(index: int, size: int) -> list[NodeId]:
    return _plan(_inclusion_ranges(index, size))


def inclusion_proof(index: int, size: int, nodes: Nodes) -> list[bytes]:
    return [_range_hash(lo, hi, nodes) for lo, hi in _inclusion_ranges(index, size)]


# ---------------------------------------------------------------- consistency


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Ranges of RFC 9162 PROOF(size1, D[0:size2]), in proof order."""
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency needs 0 < size1 <= size2, got {size1}, {size2}")
    # Down toward the old tree's last leaf, until a subtree ends where the old tree ends. That subtree
    # is in the proof unless it starts at 0 (RFC 9162's b: then it is the whole old tree, known to the verifier).
    siblings, (lo, hi) = _descend(size1 - 1, size2, stop_hi=size1)
    return ([(lo, hi)] if lo else []) + siblings[::-1]


def consistency_proof_plan(size1: int, size2: int) -> list[NodeId]:
    return _plan(_consistency_ranges(size1, size2))


def consistency_proof(size1: int, size2: int, nodes: Nodes) -> list[bytes]:
    return [_range_hash(lo, hi, nodes) for lo, hi in _consistency_ranges(size1, size2)]


# ---------------------------------------------------------------- verifiers


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise ProofError(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} has {len(value)} bytes, expected {HASH_SIZE}")
    return bytes(value)


def _check_size(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _climb(fn: int, sn: int, path: Sequence[bytes], what: str) -> Iterator[tuple[bytes, bool]]:
    """The walk of RFC 9162 §2.1.3.2 and §2.1.4.2 from node `fn` up to the root, `sn` the last node of its level:
    each proof hash with whether it is the left sibling. Raises ProofError if the path is too long or too short."""
    for p in path:
        if sn == 0:
            raise ProofError(f"{what} is too long")
        on_left = bool(fn & 1) or fn == sn
        yield p, on_left
        if on_left:
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{what} is too short")


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2. Raises ProofError unless `proof` puts `leaf_hash` at `index` under `root`."""
    index = _check_size("leaf index", index)
    size = _check_size("tree size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    r = _check_hash("leaf hash", leaf_hash)
    root = _check_hash("root hash", root)
    path = [_check_hash(f"proof[{i}]", p) for i, p in enumerate(proof)]
    what = f"inclusion proof of {len(path)} hashes for index {index}, size {size}"
    for p, on_left in _climb(index, size - 1, path, what):
        r = node_hash(p, r) if on_left else node_hash(r, p)
    if r != root:
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2. Raises ProofError unless the tree at `size1` is a prefix of the tree at `size2`."""
    size1 = _check_size("size1", size1)
    size2 = _check_size("size2", size2)
    if size1 > size2:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}")
    if size1 == 0:
        # Every tree extends the empty tree: such a proof says nothing and is refused.
        raise ProofError("consistency with an empty tree (size1 = 0) is meaningless")
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal, so the proof must be empty")
        # Same tree: the roots must simply be equal. Length is not enforced here to
        # match the public vector "sizes are equal (one) and proof is empty".
        if not isinstance(root1, (bytes, bytearray)) or not isinstance(root2, (bytes, bytearray)):
            raise ProofError("roots must be bytes")
        if not root1 or not root2:
            raise ProofError("empty root hash")
        if root1 != root2:
            raise ProofError("sizes are equal but the roots differ")
        return
    root1 = _check_hash("root1", root1)
    root2 = _check_hash("root2", root2)
    path = [_check_hash(f"proof[{i}]", p) for i, p in enumerate(proof)]
    if not path:
        raise ProofError("consistency proof is empty")
    if size1 & (size1 - 1) == 0:  # the old root is itself a node of the new tree
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c, on_left in _climb(fn, sn, path[1:], f"consistency proof of {len(proof)} hashes for {size1} -> {size2}"):
        if on_left:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    if fr != root1:
        raise ProofError("consistency proof does not lead to root1")
    if sr != root2:
        raise ProofError("consistency proof does not lead to root2")


# ---------------------------------------------------------------- reference MTH


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 MTH over leaf hashes, recursively (reference implementation)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root_from_leaves(leaves[:k]), root_from_leaves(leaves[k:]))


def inclusion_proof_from_leaves(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 PATH(m, D[n]), recursively (reference implementation)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} out of range for tree size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return inclusion_proof_from_leaves(index, leaves[:k]) + [root_from_leaves(leaves[k:])]
    return inclusion_proof_from_leaves(index - k, leaves[k:]) + [root_from_leaves(leaves[:k])]


def consistency_proof_from_leaves(size1: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 PROOF(m, D[n]), recursively (reference implementation)."""
    if not 0 < size1 <= len(leaves):
        raise ValueError(f"consistency needs 0 < size1 <= size2, got {size1}, {len(leaves)}")

    def subproof(m: int, d: Sequence[bytes], complete: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if complete else [root_from_leaves(d)]
        k = _split(n)
        if m <= k:
            return subproof(m, d[:k], complete) + [root_from_leaves(d[k:])]
        return subproof(m - k, d[k:], False) + [root_from_leaves(d[:k])]

    return subproof(size1, leaves, True)
