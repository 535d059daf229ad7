"""Signed checkpoints: the platform's Ed25519 statement of tree size, root, chain head and time.

Two signatures over one checkpoint:
- a C2SP signed note (tlog-checkpoint body: origin, size, base64 root), so standard
  transparency-log tooling can check it;
- an Ed25519 signature over the canonical JSON of all five fields, because the note
  format carries neither the chain head nor the time.

Key ids and verifier keys follow C2SP signed-note for Ed25519 (algorithm byte 0x01).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import canonical_json
from .hashing import HASH_SIZE, b64, unb64
from .note import CheckpointError, check_key_name, parse_checkpoint_body, parse_note, signature_line

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "SignedCheckpoint",
    "generate_private_key_pem",
    "load_private_key",
    "public_key_raw",
    "key_id",
    "verifier_key",
    "parse_verifier_key",
    "public_key_json",
    "note_body",
    "sign_checkpoint",
    "to_json",
    "verify_note",
    "verify_checkpoint_json",
]

ED25519_ALG = b"\x01"
SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    chain_head: bytes
    timestamp: str


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str  # full C2SP signed note text
    signature: bytes  # Ed25519 over the canonical JSON payload
    key_id: bytes  # 4 bytes


# ---------------------------------------------------------------- keys


def generate_private_key_pem() -> bytes:
    """A new Ed25519 private key as unencrypted PKCS#8 PEM."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem_or_raw: bytes | str) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from PKCS#8 PEM or the 32 raw seed bytes."""
    if isinstance(pem_or_raw, str):
        pem_or_raw = pem_or_raw.encode("ascii")
    if len(pem_or_raw) == 32:
        return Ed25519PrivateKey.from_private_bytes(pem_or_raw)
    try:
        key = serialization.load_pem_private_key(pem_or_raw, password=None)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"expected an Ed25519 key, got {type(key).__name__}")
    return key


def public_key_raw(key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> bytes:
    """The 32 raw public key bytes of a private key, public key or raw public key."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    raise CheckpointError("expected an Ed25519 key or 32 raw public key bytes")


def key_id(name: str, pub_raw: bytes) -> bytes:
    """C2SP signed-note key id: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pubkey)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_ALG + pub_raw).digest()[:4]


def verifier_key(name: str, pub_raw: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> str:
    """C2SP vkey string: name+hex8(key id)+base64(0x01 ‖ pubkey)."""
    check_key_name(name)
    pub_raw = public_key_raw(pub_raw)
    return f"{name}+{key_id(name, pub_raw).hex()}+{b64(ED25519_ALG + pub_raw)}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes, bytes]:
    """Parse a log's C2SP vkey (type 0x01) into (name, key_id, raw public key), checking the key id."""
    from .cosignature import ALG_ED25519, parse_vkey  # cosignature builds on this module

    key = parse_vkey(vkey)
    if key.alg != ALG_ED25519:
        raise CheckpointError("verifier key is not an Ed25519 (0x01) key")
    return key.name, key.key_id, key.public_key


def public_key_json(name: str, key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> dict[str, str]:
    """The public key object of SPEC §7: {public_key, key_id (8 hex digits), verifier_key}."""
    pub_raw = public_key_raw(key)
    return {
        "public_key": b64(pub_raw),
        "key_id": key_id(name, pub_raw).hex(),
        "verifier_key": verifier_key(name, pub_raw),
    }


# ---------------------------------------------------------------- signing


def note_body(cp: Checkpoint) -> str:
    """C2SP tlog-checkpoint body: origin, tree size, base64 root, each ending in a newline."""
    return f"{cp.origin}\n{cp.tree_size}\n{b64(cp.root_hash)}\n"


def _json_payload(cp: Checkpoint) -> bytes:
    return canonical_json(
        {
            "origin": cp.origin,
            "tree_size": cp.tree_size,
            "root_hash": b64(cp.root_hash),
            "chain_head": b64(cp.chain_head),
            "timestamp": cp.timestamp,
        }
    )


def _check_checkpoint(cp: Checkpoint) -> None:
    check_key_name(cp.origin)
    if not isinstance(cp.tree_size, int) or isinstance(cp.tree_size, bool) or cp.tree_size < 0:
        raise CheckpointError(f"tree_size must be a non-negative int, got {cp.tree_size!r}")
    if len(cp.root_hash) != HASH_SIZE or len(cp.chain_head) != HASH_SIZE:
        raise CheckpointError("root_hash and chain_head must be 32 bytes")
    if not isinstance(cp.timestamp, str) or "\n" in cp.timestamp:
        raise CheckpointError("timestamp must be a one-line string")


def sign_checkpoint(cp: Checkpoint, private_key: Ed25519PrivateKey) -> SignedCheckpoint:
    _check_checkpoint(cp)
    pub_raw = public_key_raw(private_key)
    kid = key_id(cp.origin, pub_raw)
    body = note_body(cp)
    note_sig = private_key.sign(body.encode("utf-8"))
    note = body + "\n" + signature_line(cp.origin, kid + note_sig)
    return SignedCheckpoint(cp, note, private_key.sign(_json_payload(cp)), kid)


def to_json(signed: SignedCheckpoint) -> dict[str, Any]:
    """Checkpoint object of SPEC §7 (hashes and signature base64, key_id 8 hex digits)."""
    cp = signed.checkpoint
    return {
        "origin": cp.origin,
        "tree_size": cp.tree_size,
        "root_hash": b64(cp.root_hash),
        "chain_head": b64(cp.chain_head),
        "timestamp": cp.timestamp,
        "note": signed.note,
        "signature": b64(signed.signature),
        "key_id": signed.key_id.hex(),
    }


# ---------------------------------------------------------------- verifying


def _verify_ed25519(pub_raw: bytes, signature: bytes, message: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(pub_raw).verify(signature, message)
    except InvalidSignature:
        raise CheckpointError(f"{what} signature does not verify") from None
    except ValueError as exc:
        raise CheckpointError(f"{what}: bad public key: {exc}") from None


def _resolve_key(vkey_or_pub: str | bytes, origin: str) -> tuple[bytes, bytes]:
    """(key id, raw public key) for the signer named `origin`."""
    if isinstance(vkey_or_pub, str):
        name, kid, pub_raw = parse_verifier_key(vkey_or_pub)
        if name != origin:
            raise CheckpointError(f"verifier key is for {name!r}, not origin {origin!r}")
        return kid, pub_raw
    pub_raw = public_key_raw(vkey_or_pub)
    return key_id(origin, pub_raw), pub_raw


def verify_note(note_text: str, vkey_or_pub: str | bytes, origin: str) -> tuple[int, bytes]:
    """Verify a signed checkpoint note; return (tree_size, root_hash)."""
    check_key_name(origin)
    kid, pub_raw = _resolve_key(vkey_or_pub, origin)
    note = parse_note(note_text)
    note_origin, size, root = parse_checkpoint_body(note.body, extensions=False)
    if note_origin != origin:
        raise CheckpointError(f"note origin {note_origin!r} is not {origin!r}")
    verified = False
    for name, blob in note.signatures:
        # Signatures by other keys are allowed by C2SP and ignored.
        if name != origin or blob[:4] != kid:
            continue
        if len(blob) != 4 + SIGNATURE_SIZE:
            raise CheckpointError("Ed25519 note signature must be 64 bytes")
        _verify_ed25519(pub_raw, blob[4:], note.body.encode("utf-8"), "note")
        verified = True
    if not verified:
        raise CheckpointError("note carries no signature by the expected key")
    return size, root


def verify_checkpoint_json(d: dict[str, Any], pub_raw: bytes) -> Checkpoint:
    """Verify both signatures of a checkpoint object and that note and fields agree."""
    if not isinstance(d, dict):
        raise CheckpointError("checkpoint must be a JSON object")
    try:
        origin, tree_size, timestamp = d["origin"], d["tree_size"], d["timestamp"]
        root_hash, chain_head = unb64(d["root_hash"]), unb64(d["chain_head"])
        signature, note, kid_hex = unb64(d["signature"]), d["note"], d["key_id"]
    except KeyError as exc:
        raise CheckpointError(f"checkpoint lacks field {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CheckpointError(f"checkpoint field: {exc}") from None
    if not isinstance(origin, str) or not isinstance(timestamp, str):
        raise CheckpointError("origin and timestamp must be strings")
    cp = Checkpoint(origin, tree_size, root_hash, chain_head, timestamp)
    _check_checkpoint(cp)
    pub_raw = public_key_raw(pub_raw)
    if kid_hex != key_id(origin, pub_raw).hex():
        raise CheckpointError("checkpoint key_id does not match the public key")
    if len(signature) != SIGNATURE_SIZE:
        raise CheckpointError("checkpoint signature must be 64 bytes")
    _verify_ed25519(pub_raw, signature, _json_payload(cp), "checkpoint JSON")
    note_size, note_root = verify_note(note, pub_raw, origin)
    if note_size != tree_size or note_root != root_hash:
        raise CheckpointError("signed note and checkpoint fields disagree")
    return cp
