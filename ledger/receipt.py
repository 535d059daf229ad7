"""Offline receipt check: an entry, its inclusion proof, a signed checkpoint and the public key.

No database, no server: anyone holding these four JSON objects can confirm the
entry is in the ledger the platform signed. Usage:

    python -m ledger.receipt ENTRY.json PROOF.json CHECKPOINT.json PUBKEY.json
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .checkpoint import CheckpointError, parse_verifier_key, verify_checkpoint_json
from .hashing import HASH_SIZE, leaf_hash, unb64
from .merkle import ProofError, verify_inclusion

__all__ = ["ReceiptError", "verify_receipt", "main"]


class ReceiptError(ValueError):
    """A receipt failed verification; the message names the failing check."""


def _field(obj: Any, name: str, what: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise ReceiptError(f"{what} lacks field {name!r}")
    return obj[name]


def _int(obj: Any, name: str, what: str) -> int:
    value = _field(obj, name, what)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ReceiptError(f"{what}.{name} must be a non-negative integer")
    return value


def _hash(obj: Any, name: str, what: str) -> bytes:
    try:
        value = unb64(_field(obj, name, what))
    except ValueError as exc:
        raise ReceiptError(f"{what}.{name}: {exc}") from None
    if len(value) != HASH_SIZE:
        raise ReceiptError(f"{what}.{name} is not a 32-byte hash")
    return value


def verify_receipt(entry: dict, proof: dict, checkpoint: dict, public_key: dict) -> None:
    """Raise ReceiptError unless `entry` is provably in the tree `checkpoint` signs."""
    # The key: raw bytes, key id and vkey must all name the same key.
    try:
        pub_raw = unb64(_field(public_key, "public_key", "public key"))
        key_name, kid, vkey_pub = parse_verifier_key(_field(public_key, "verifier_key", "public key"))
    except (ValueError, CheckpointError) as exc:
        raise ReceiptError(f"public key: {exc}") from None
    if vkey_pub != pub_raw:
        raise ReceiptError("public key: verifier_key and public_key differ")
    if _field(public_key, "key_id", "public key") != kid.hex():
        raise ReceiptError("public key: key_id does not match verifier_key")

    # The entry: its hash is over the exact canonical text.
    canonical = _field(entry, "canonical", "entry")
    if not isinstance(canonical, str):
        raise ReceiptError("entry.canonical must be a string")
    entry_leaf = _hash(entry, "leaf_hash", "entry")
    _hash(entry, "chain_hash", "entry")
    if leaf_hash(canonical.encode("utf-8")) != entry_leaf:
        raise ReceiptError("entry leaf_hash is not SHA-256(0x00 ‖ canonical)")
    seq = _int(entry, "seq", "entry")
    try:
        body = orjson.loads(canonical)
    except orjson.JSONDecodeError as exc:
        raise ReceiptError(f"entry canonical is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("seq") != seq or isinstance(body.get("seq"), bool):
        raise ReceiptError("entry seq differs from the seq inside canonical")
    for member in ("kind", "time"):
        if member in entry and member in body and entry[member] != body[member]:
            raise ReceiptError(f"entry {member} differs from the {member} inside canonical")

    # The proof is about this entry.
    leaf_index = _int(proof, "leaf_index", "proof")
    tree_size = _int(proof, "tree_size", "proof")
    if leaf_index != seq:
        raise ReceiptError(f"proof leaf_index {leaf_index} is not entry seq {seq}")
    if _hash(proof, "leaf_hash", "proof") != entry_leaf:
        raise ReceiptError("proof leaf_hash is not the entry's leaf_hash")
    path_b64 = _field(proof, "proof", "proof")
    if not isinstance(path_b64, list):
        raise ReceiptError("proof.proof must be a list")
    try:
        path = [unb64(p) for p in path_b64]
    except ValueError as exc:
        raise ReceiptError(f"proof hash: {exc}") from None

    # The checkpoint: both signatures, by this key.
    if _field(checkpoint, "origin", "checkpoint") != key_name:
        raise ReceiptError("checkpoint origin is not the key's name")
    try:
        cp = verify_checkpoint_json(checkpoint, pub_raw)
    except CheckpointError as exc:
        raise ReceiptError(f"checkpoint: {exc}") from None
    if tree_size != cp.tree_size:
        raise ReceiptError(f"proof tree_size {tree_size} is not checkpoint tree_size {cp.tree_size}")

    try:
        verify_inclusion(entry_leaf, leaf_index, tree_size, path, cp.root_hash)
    except ProofError as exc:
        raise ReceiptError(f"inclusion proof: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 4:
        print("usage: python -m ledger.receipt ENTRY.json PROOF.json CHECKPOINT.json PUBKEY.json", file=sys.stderr)
        return 2
    try:
        entry, proof, checkpoint, public_key = (orjson.loads(Path(p).read_bytes()) for p in args)
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"FAIL: cannot read input: {exc}")
        return 1
    try:
        verify_receipt(entry, proof, checkpoint, public_key)
    except ReceiptError as exc:
        print(f"FAIL: {exc}")
        return 1
    print(
        f"OK: entry {entry['seq']} is in the ledger of size {checkpoint['tree_size']} "
        f"signed at {checkpoint['timestamp']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
