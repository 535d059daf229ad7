"""Signed checkpoints: C2SP note and JSON signature, round trip and tampering."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    generate_private_key_pem,
    key_id,
    load_private_key,
    note_body,
    parse_verifier_key,
    public_key_json,
    public_key_raw,
    sign_checkpoint,
    to_json,
    verifier_key,
    verify_checkpoint_json,
    verify_note,
)
from ledger.hashing import b64

ORIGIN = "escrow.example/ledger"
KEY = load_private_key(generate_private_key_pem())
PUB = public_key_raw(KEY)
CP = Checkpoint(ORIGIN, 42, hashlib.sha256(b"root").digest(), hashlib.sha256(b"head").digest(), "2025-06-01T12:00:00Z")


def test_key_id_and_verifier_key_follow_c2sp():
    kid = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + PUB).digest()[:4]
    assert key_id(ORIGIN, PUB) == kid
    vkey = verifier_key(ORIGIN, PUB)
    key_b64 = base64.b64encode(b"\x01" + PUB).decode()
    assert vkey == f"{ORIGIN}+{kid.hex()}+{key_b64}"
    assert parse_verifier_key(vkey) == (ORIGIN, kid, PUB)
    assert public_key_json(ORIGIN, KEY) == {"public_key": b64(PUB), "key_id": kid.hex(), "verifier_key": vkey}


def test_raw_seed_loads_the_same_key():
    from cryptography.hazmat.primitives import serialization

    seed = KEY.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    assert public_key_raw(load_private_key(seed)) == PUB


def test_note_shape():
    signed = sign_checkpoint(CP, KEY)
    body = note_body(CP)
    assert body == f"{ORIGIN}\n42\n{b64(CP.root_hash)}\n"
    sig_line = signed.note[len(body) :]
    assert sig_line.startswith(f"\n\u2014 {ORIGIN} ") and sig_line.endswith("\n")
    blob = base64.b64decode(sig_line.split(" ")[2])
    assert blob[:4] == key_id(ORIGIN, PUB) and len(blob) == 68


def test_round_trip():
    signed = sign_checkpoint(CP, KEY)
    assert verify_note(signed.note, PUB, ORIGIN) == (42, CP.root_hash)
    assert verify_note(signed.note, verifier_key(ORIGIN, PUB), ORIGIN) == (42, CP.root_hash)
    assert verify_checkpoint_json(to_json(signed), PUB) == CP


def test_every_bit_of_note_body_and_signature_matters():
    note = sign_checkpoint(CP, KEY).note.encode("utf-8")
    sig_start = note.rindex(b" ") + 1
    positions = list(range(len(note_body(CP).encode())))
    positions += list(range(sig_start, len(note) - 1))
    for pos in positions:
        for bit in range(8):
            tampered = bytearray(note)
            tampered[pos] ^= 1 << bit
            try:
                text = tampered.decode("utf-8")
            except UnicodeDecodeError:
                continue  # not even text: refused before any check
            with pytest.raises(CheckpointError):
                verify_note(text, PUB, ORIGIN)


def test_json_fields_and_signature_are_bound():
    d = to_json(sign_checkpoint(CP, KEY))
    other = sign_checkpoint(Checkpoint(ORIGIN, 43, CP.root_hash, CP.chain_head, CP.timestamp), KEY)
    tampered = [
        {**d, "tree_size": 43},
        {**d, "timestamp": "2025-06-01T12:00:01Z"},
        {**d, "chain_head": b64(hashlib.sha256(b"other").digest())},
        {**d, "root_hash": b64(hashlib.sha256(b"other").digest())},
        {**d, "note": to_json(other)["note"]},
        {**d, "key_id": "00000000"},
    ]
    sig = bytearray(base64.b64decode(d["signature"]))
    for i in range(len(sig) * 8):
        flipped = bytearray(sig)
        flipped[i // 8] ^= 1 << (i % 8)
        tampered.append({**d, "signature": b64(bytes(flipped))})
    for bad in tampered:
        with pytest.raises(CheckpointError):
            verify_checkpoint_json(bad, PUB)


def test_wrong_key_is_refused():
    other = public_key_raw(load_private_key(generate_private_key_pem()))
    signed = sign_checkpoint(CP, KEY)
    with pytest.raises(CheckpointError):
        verify_note(signed.note, other, ORIGIN)
    with pytest.raises(CheckpointError):
        verify_note(signed.note, verifier_key(ORIGIN, other), ORIGIN)
    with pytest.raises(CheckpointError):
        verify_checkpoint_json(to_json(signed), other)
    with pytest.raises(CheckpointError):
        verify_note(signed.note, PUB, "someone.else/log")


def test_foreign_cosignature_is_ignored():
    signed = sign_checkpoint(CP, KEY)
    witness_sig = b64(b"\x01\x02\x03\x04" + bytes(64))
    cosigned = signed.note + f"\u2014 witness.example {witness_sig}\n"
    assert verify_note(cosigned, PUB, ORIGIN) == (42, CP.root_hash)
