"""Secrets the service holds: the operator token, the phone-encryption key, the ledger signing key.

Each comes from configuration; in development, when unset, it is generated once into the data
folder (mode 0600) and reused. Production refuses to start without them (see `Settings`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.checkpoint import generate_private_key_pem, load_private_key, public_key_raw, verifier_key
from service.core.settings import Settings


def _read_or_create(path: Path, make: callable) -> bytes:
    """Read a key file, or create it once. Replicas may start together on an empty folder: the key is
    written to a private temporary file and linked into place atomically, and the loser of the race
    reads the winner's complete file."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes()
        return data
    finally:
        os.unlink(tmp)


class PhoneVault:
    """AES-GCM encryption of phone numbers at rest, and a keyed hash to find a consumer by phone."""

    def __init__(self, master_key: bytes):
        if len(master_key) != 32:
            raise ValueError("the phone key must be 32 bytes")
        enc = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"escrow phone encryption").derive(master_key)
        self._lookup_key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"escrow phone lookup").derive(
            master_key
        )
        self._aead = AESGCM(enc)

    def encrypt(self, phone: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, phone.encode(), b"consumer-phone")

    def decrypt(self, blob: bytes) -> str:
        return self._aead.decrypt(blob[:12], blob[12:], b"consumer-phone").decode()

    def seal(self, text: str) -> str:
        """Encrypt a secret kept for an idempotent replay (a token shown once is never stored in clear)."""
        nonce = secrets.token_bytes(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, text.encode(), b"stored-secret")).decode()

    def unseal(self, blob: str) -> str:
        raw = base64.b64decode(blob)
        return self._aead.decrypt(raw[:12], raw[12:], b"stored-secret").decode()

    def lookup(self, phone: str) -> str:
        return hmac.new(self._lookup_key, phone.encode(), hashlib.sha256).hexdigest()


@dataclass
class Keys:
    operator_token: str
    operator_token_generated: bool
    phone: PhoneVault
    signing_key: object
    public_key: bytes
    key_name: str
    verifier_key: str


def load_keys(settings: Settings) -> Keys:
    data = settings.data_dir
    generated = False
    token = settings.operator_token
    if not token:
        path = data / "operator_token"
        existed = path.exists()
        token = _read_or_create(path, lambda: ("op_" + secrets.token_urlsafe(32)).encode()).decode().strip()
        generated = not existed
    if settings.phone_key:
        master = base64.b64decode(settings.phone_key, validate=True)
    else:
        master = _read_or_create(data / "phone.key", lambda: secrets.token_bytes(32))
    if settings.signing_key:
        pem = settings.signing_key.encode()
    else:
        pem = _read_or_create(data / "signing_key.pem", generate_private_key_pem)
    private = load_private_key(pem)
    pub = public_key_raw(private)
    name = settings.ledger_origin
    return Keys(
        operator_token=token,
        operator_token_generated=generated,
        phone=PhoneVault(master),
        signing_key=private,
        public_key=pub,
        key_name=name,
        verifier_key=verifier_key(name, pub),
    )
