"""The public RFC 9162 test vectors, kept inside the repository (vectors/rfc9162, see its README)."""

from __future__ import annotations

import json
from pathlib import Path

from ledger.hashing import leaf_hash

VECTORS = Path(__file__).resolve().parent / "vectors" / "rfc9162"
TREE = json.loads((VECTORS / "tree.json").read_text())
INPUTS = [bytes.fromhex(h) for h in TREE["leaf_inputs_hex"]]
LEAVES = [leaf_hash(x) for x in INPUTS]


def vector_files(kind: str, name: str = "*.json") -> list[Path]:
    """The vector files of one kind ("inclusion" or "consistency"), in a stable order."""
    return sorted((VECTORS / kind).rglob(name))
