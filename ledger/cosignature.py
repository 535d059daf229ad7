"""C2SP cosignatures (tlog-cosignature, Ed25519 `cosignature/v1`), verifier keys and notes with several signatures.

A witness (见证方: the custodian bank, the regulator) cosigns a checkpoint body with its own
Ed25519 key. Its note signature line carries keyid ‖ u64 big-endian time ‖ 64-byte signature over
"cosignature/v1\\ntime <T>\\n" ‖ body. The key id is SHA-256(name ‖ 0x0A ‖ 0x04 ‖ pubkey)[:4]
(0x04 instead of the log's 0x01, so a cosignature is never mistaken for the log's signature).

This module owns: vkeys of both kinds (0x01 log keys, 0x04 cosigner keys), the private-key file
format of a witness, and the quorum check of a cosigned checkpoint. Notes are split and joined by
`ledger.note` (its parse_note, signature_line, add_signature_lines, parse_checkpoint_body are
re-exported here for older imports).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .hashing import b64, unb64
from .note import (
    CheckpointError,
    ParsedNote,
    add_signature_lines,
    check_key_name,
    parse_checkpoint_body,
    parse_note,
    signature_line,
)

__all__ = [
    "ALG_ED25519",
    "ALG_COSIGNATURE_V1",
    "VKey",
    "ParsedNote",
    "CosignedCheckpoint",
    "cosigner_key_id",
    "format_vkey",
    "parse_vkey",
    "generate_witness_key",
    "parse_witness_key",
    "cosign",
    "cosignature_message",
    "verify_cosignature",
    "parse_note",
    "signature_line",
    "add_signature_lines",
    "parse_checkpoint_body",
    "verify_cosigned",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
_MAX_TIME = 2**63 - 1
PRIVATE_PREFIX = "PRIVATE+KEY+"


@dataclass(frozen=True)
class VKey:
    name: str
    key_id: bytes
    alg: int
    public_key: bytes

    def __str__(self) -> str:
        return format_vkey(self.name, self.public_key, self.alg)


@dataclass(frozen=True)
class CosignedCheckpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    body: str
    witnesses: list[tuple[str, int]]  # (name, timestamp) of each trusted cosignature that verified


def _key_id(name: str, alg: int, pub: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + pub).digest()[:4]


def cosigner_key_id(name: str, pub: bytes) -> bytes:
    """C2SP tlog-cosignature key id: SHA-256(name ‖ "\\n" ‖ 0x04 ‖ pubkey)[:4]."""
    return _key_id(name, ALG_COSIGNATURE_V1, pub)


def format_vkey(name: str, pub: bytes, alg: int = ALG_COSIGNATURE_V1) -> str:
    check_key_name(name)
    if len(pub) != 32:
        raise CheckpointError("an Ed25519 public key is 32 bytes")
    return f"{name}+{_key_id(name, alg, pub).hex()}+{b64(bytes([alg]) + pub)}"


def parse_vkey(vkey: str) -> VKey:
    """Parse a C2SP vkey of type 0x01 (log) or 0x04 (cosigner), checking its key id."""
    parts = vkey.strip().split("+", 2) if isinstance(vkey, str) else []
    if len(parts) != 3:
        raise CheckpointError("verifier key must be name+keyid+key")
    name, hex_id, key_b64 = parts
    check_key_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise CheckpointError("verifier key id must be 8 lowercase hex digits")
    try:
        key = unb64(key_b64)
    except ValueError as exc:
        raise CheckpointError(f"verifier key: {exc}") from None
    if len(key) != 33 or key[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise CheckpointError("verifier key is not an Ed25519 (0x01) or cosignature/v1 (0x04) key")
    kid = bytes.fromhex(hex_id)
    if kid != _key_id(name, key[0], key[1:]):
        raise CheckpointError("verifier key id does not match its name and key")
    return VKey(name, kid, key[0], key[1:])


# ---------------------------------------------------------------- witness keys


def generate_witness_key(name: str) -> tuple[str, str]:
    """A new cosigner key: (private key text, vkey). The private text is PRIVATE+KEY+name+keyid+base64(0x04 ‖ seed)."""
    check_key_name(name)
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = cosigner_key_id(name, pub)
    return f"{PRIVATE_PREFIX}{name}+{kid.hex()}+{b64(bytes([ALG_COSIGNATURE_V1]) + seed)}", format_vkey(name, pub)


def parse_witness_key(text: str) -> tuple[str, Ed25519PrivateKey, str]:
    """(name, private key, vkey) from a private key text made by `generate_witness_key`."""
    text = text.strip()
    if not text.startswith(PRIVATE_PREFIX):
        raise CheckpointError("witness key must start with PRIVATE+KEY+")
    parts = text[len(PRIVATE_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("witness key must be PRIVATE+KEY+name+keyid+key")
    name, hex_id, key_b64 = parts
    check_key_name(name)
    try:
        raw = unb64(key_b64)
    except ValueError as exc:
        raise CheckpointError(f"witness key: {exc}") from None
    if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
        raise CheckpointError("witness key is not a cosignature/v1 Ed25519 key")
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if cosigner_key_id(name, pub).hex() != hex_id:
        raise CheckpointError("witness key id does not match its name and key")
    return name, key, format_vkey(name, pub)


# ---------------------------------------------------------------- cosigning


def cosignature_message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode("ascii") + body.encode("utf-8")


def cosign(body: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> str:
    """The cosignature line of witness `name` over a checkpoint body, at POSIX time `timestamp`."""
    if not 0 <= timestamp <= _MAX_TIME:
        raise CheckpointError("cosignature time out of range")
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = key.sign(cosignature_message(body, timestamp))
    return signature_line(name, cosigner_key_id(name, pub) + struct.pack(">Q", timestamp) + sig)


def verify_cosignature(body: str, vkey: VKey, blob: bytes) -> int:
    """Verify one cosignature blob (keyid ‖ time ‖ sig) by `vkey`; return its timestamp."""
    if vkey.alg != ALG_COSIGNATURE_V1:
        raise CheckpointError(f"{vkey.name}: not a cosignature/v1 key")
    if len(blob) != 4 + 8 + 64 or blob[:4] != vkey.key_id:
        raise CheckpointError(f"{vkey.name}: cosignature has the wrong length or key id")
    (timestamp,) = struct.unpack(">Q", blob[4:12])
    if timestamp > _MAX_TIME:
        raise CheckpointError(f"{vkey.name}: cosignature time out of range")
    try:
        Ed25519PublicKey.from_public_bytes(vkey.public_key).verify(blob[12:], cosignature_message(body, timestamp))
    except InvalidSignature:
        raise CheckpointError(f"{vkey.name}: cosignature does not verify") from None
    return timestamp


def _verify_log_signature(body: str, vkey: VKey, blob: bytes) -> bool:
    if len(blob) != 4 + 64 or blob[:4] != vkey.key_id:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(vkey.public_key).verify(blob[4:], body.encode("utf-8"))
    except InvalidSignature:
        return False
    return True


def verify_cosigned(
    note: str, log_vkey: str | VKey, witness_vkeys: Sequence[str | VKey] = (), quorum: int = 0
) -> CosignedCheckpoint:
    """Verify a checkpoint note: the log's signature, then at least `quorum` distinct trusted cosignatures.

    Signatures by unknown keys are ignored (C2SP); a line claiming a trusted key id that fails to verify
    is an error, because only someone tampering with the note would produce one.
    """
    log_key = parse_vkey(log_vkey) if isinstance(log_vkey, str) else log_vkey
    if log_key.alg != ALG_ED25519:
        raise CheckpointError("the log's vkey must be an Ed25519 (0x01) key")
    witnesses = [parse_vkey(v) if isinstance(v, str) else v for v in witness_vkeys]
    parsed = parse_note(note)
    origin, size, root = parse_checkpoint_body(parsed.body)
    if origin != log_key.name:
        raise CheckpointError(f"checkpoint origin {origin!r} is not the log key's name {log_key.name!r}")
    if not any(
        name == log_key.name and _verify_log_signature(parsed.body, log_key, blob) for name, blob in parsed.signatures
    ):
        raise CheckpointError("checkpoint carries no valid signature by the log's key")
    got: dict[str, int] = {}
    for name, blob in parsed.signatures:
        for w in witnesses:
            if w.name == name and blob[:4] == w.key_id and w.alg == ALG_COSIGNATURE_V1:
                got[w.key_id.hex() + name] = verify_cosignature(parsed.body, w, blob)
    cosigners = [(k[8:], t) for k, t in got.items()]
    if len(cosigners) < quorum:
        raise CheckpointError(f"checkpoint has {len(cosigners)} trusted cosignatures, quorum is {quorum}")
    return CosignedCheckpoint(origin, size, root, parsed.body, cosigners)
