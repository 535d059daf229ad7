"""Canonical JSON and the hash primitives."""

from __future__ import annotations

import hashlib

import pytest

from ledger.canonical import canonical_json
from ledger.hashing import GENESIS_HEAD, b64, chain_hash, leaf_hash, node_hash, unb64


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": {"d": [1, "核销"], "c": None}}) == (
        '{"a":{"c":null,"d":[1,"核销"]},"b":1}'.encode()
    )


@pytest.mark.parametrize("obj", [1.0, {"amount": 0.5}, {"x": [1, {"y": 2.5}]}])
def test_canonical_json_refuses_floats(obj):
    with pytest.raises(TypeError):
        canonical_json(obj)


def test_hash_primitives():
    a, b = b"\x11" * 32, b"\x22" * 32
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert chain_hash(GENESIS_HEAD, a) == hashlib.sha256(bytes(32) + a).digest()


@pytest.mark.parametrize("bad", ["", "a", "ab=", "ZH==", "a-b_", "YWJj\n", "YW Jj", "YWJj==="])
def test_unb64_is_strict(bad):
    if bad == "":
        assert unb64(bad) == b""
        return
    with pytest.raises(ValueError):
        unb64(bad)


def test_b64_round_trip():
    for data in (b"", b"\x00", b"\xff" * 33):
        assert unb64(b64(data)) == data
