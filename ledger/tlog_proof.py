"""C2SP tlog-proof@v1: a self-contained receipt (回执) of one entry, verified offline.

Text: `c2sp.org/tlog-proof@v1`, an optional `extra <base64>` line, `index <N>`, the RFC 9162
inclusion proof one base64 hash a line, an empty line, then the cosigned checkpoint verbatim.
Our receipts put the entry's canonical JSON in `extra`: it is not trusted as such, it only has to
hash (SHA-256(0x00 ‖ extra)) to the leaf the inclusion proof places under the signed root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .cosignature import CosignedCheckpoint, verify_cosigned
from .hashing import b64, leaf_hash, unb64
from .merkle import ProofError, verify_inclusion
from .note import CheckpointError, parse_decimal, parse_hash_lines, split_at_blank_line

__all__ = ["HEADER", "TlogProof", "TlogProofError", "build_tlog_proof", "parse_tlog_proof", "verify_tlog_proof"]

HEADER = "c2sp.org/tlog-proof@v1"


class TlogProofError(ValueError):
    """A tlog-proof failed to parse or verify; the message names the failing check."""


@dataclass(frozen=True)
class TlogProof:
    index: int
    proof: list[bytes]
    checkpoint: str  # the signed note, with its cosignatures
    extra: bytes | None = None


def build_tlog_proof(index: int, proof: list[bytes], checkpoint_note: str, extra: bytes | None = None) -> str:
    lines = [HEADER]
    if extra is not None:
        lines.append(f"extra {b64(extra)}")
    lines.append(f"index {index}")
    lines.extend(b64(h) for h in proof)
    return "\n".join(lines) + "\n\n" + checkpoint_note


def parse_tlog_proof(text: str) -> TlogProof:
    if not isinstance(text, str):
        raise TlogProofError("a tlog-proof is text")
    lines, checkpoint = split_at_blank_line(text, TlogProofError)
    if not checkpoint:
        raise TlogProofError("no checkpoint after the empty line")
    if lines[0] != HEADER:
        raise TlogProofError(f"first line must be {HEADER!r}")
    i = 1
    extra = None
    if i < len(lines) and lines[i].startswith("extra "):
        try:
            extra = unb64(lines[i][6:])
        except ValueError as exc:
            raise TlogProofError(f"extra: {exc}") from None
        i += 1
    if i >= len(lines) or not lines[i].startswith("index "):
        raise TlogProofError("missing index line")
    index = parse_decimal(lines[i][6:])
    if index is None:
        raise TlogProofError(f"index {lines[i][6:]!r} is not a decimal number")
    return TlogProof(index, parse_hash_lines(lines[i + 1 :], TlogProofError), checkpoint, extra)


def verify_tlog_proof(
    text: str, log_vkey: str, witness_vkeys: Sequence[str] = (), quorum: int = 0, entry: bytes | None = None
) -> tuple[TlogProof, CosignedCheckpoint]:
    """Verify a receipt: checkpoint signed by the log, `quorum` trusted cosignatures, and the entry
    (given, or else the `extra` data) at `index` under the checkpoint's root."""
    p = parse_tlog_proof(text)
    try:
        cp = verify_cosigned(p.checkpoint, log_vkey, list(witness_vkeys), quorum)
    except CheckpointError as exc:
        raise TlogProofError(f"checkpoint: {exc}") from None
    data = entry if entry is not None else p.extra
    if data is None:
        raise TlogProofError("no entry given and the proof carries no extra data")
    if entry is not None and p.extra is not None and entry != p.extra:
        raise TlogProofError("the given entry differs from the proof's extra data")
    try:
        verify_inclusion(leaf_hash(data), p.index, cp.tree_size, p.proof, cp.root_hash)
    except ProofError as exc:
        raise TlogProofError(f"inclusion proof: {exc}") from None
    return p, cp
