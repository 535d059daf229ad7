"""Canonical JSON for ledger entries: the exact bytes that get hashed.

Sorted keys, no spaces, UTF-8 with non-ASCII kept as-is. Floats are refused
everywhere because money is integer fen and a float's text form is not stable.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["canonical_json"]


def _refuse_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise TypeError(f"float {obj!r} not allowed in a ledger entry: use integer fen")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"ledger entry keys must be str, got {type(key).__name__}")
            _refuse_floats(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _refuse_floats(value)


def canonical_json(obj: Any) -> bytes:
    """Serialize `obj` as canonical JSON bytes (raises TypeError on floats)."""
    _refuse_floats(obj)
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # e.g. int beyond 64 bits, unknown type
        raise TypeError(f"not serializable as canonical JSON: {exc}") from exc
