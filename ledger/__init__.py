"""The escrow ledger: canonical entries, hash chain, RFC 9162 Merkle tree, signed checkpoints.

Pure functions and small classes; no I/O, nothing from `service/`.
"""

from .canonical import canonical_json
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    SignedCheckpoint,
    sign_checkpoint,
    verify_checkpoint_json,
    verify_note,
)
from .hashing import GENESIS_HEAD, b64, chain_hash, leaf_hash, node_hash, unb64
from .merkle import Frontier, ProofError, verify_consistency, verify_inclusion
from .receipt import ReceiptError, verify_receipt
from .verify import ChainReport, verify_chain

__all__ = [
    "canonical_json",
    "Checkpoint",
    "CheckpointError",
    "SignedCheckpoint",
    "sign_checkpoint",
    "verify_checkpoint_json",
    "verify_note",
    "GENESIS_HEAD",
    "b64",
    "unb64",
    "chain_hash",
    "leaf_hash",
    "node_hash",
    "Frontier",
    "ProofError",
    "verify_consistency",
    "verify_inclusion",
    "ReceiptError",
    "verify_receipt",
    "ChainReport",
    "verify_chain",
]
