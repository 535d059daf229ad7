"""Opaque, type-prefixed, time-ordered ids (`card_…`, `rdm_…`) and random bearer tokens."""

from __future__ import annotations

import hashlib
import secrets
import time


def new_id(prefix: str) -> str:
    # Millisecond time first so ids sort by creation: cursor pagination orders by id.
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(6)}"


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"  # 192 random bits


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
