"""Hash primitives of the ledger: RFC 9162 leaf/node hashes, the hash chain, base64.

Domain separation (0x00 for leaves, 0x01 for interior nodes) is what keeps a
leaf from being passed off as a node (second-preimage attacks on the tree).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = [
    "HASH_SIZE",
    "GENESIS_HEAD",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "chain_hash",
    "b64",
    "unb64",
]

HASH_SIZE = 32
# The chain's first head hashes onto 32 zero bytes (SPEC §4).
GENESIS_HEAD = bytes(32)
# RFC 9162: the hash of an empty tree is the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

# Copying a pre-seeded hasher is cheaper than building one per call.
_LEAF_PREFIX = hashlib.sha256(b"\x00")
_NODE_PREFIX = hashlib.sha256(b"\x01")
_sha256 = hashlib.sha256


def leaf_hash(entry_bytes: bytes) -> bytes:
    """SHA-256(0x00 ‖ entry_bytes)."""
    h = _LEAF_PREFIX.copy()
    h.update(entry_bytes)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right)."""
    h = _NODE_PREFIX.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def chain_hash(prev_head: bytes, leaf: bytes) -> bytes:
    """SHA-256(prev_head ‖ leaf): the next head of the hash chain."""
    return _sha256(prev_head + leaf).digest()


def b64(data: bytes) -> str:
    """Standard base64 (with padding)."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict standard base64: refuses other alphabets, bad padding, non-canonical tails."""
    if not isinstance(text, str):
        raise ValueError(f"base64 value must be a string, got {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None
    # b64decode ignores non-zero padding bits; a second spelling of the same bytes is refused.
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("invalid base64: non-canonical encoding")
    return data
