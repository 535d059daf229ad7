"""A consumer's receipt, end to end: the answer's ledger_seq, the entry, a later signed checkpoint, the
inclusion proof at its size and the public key verify offline (in-process and with the CLI), and one
flipped bit anywhere is refused."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from api_tests.factories import (
    answer,
    ask,
    buy_card,
    inclusion_proof,
    latest_checkpoint,
    ledger_mix,
    ledger_public_key,
    new_checkpoint,
    redeem,
    refund,
)
from ledger.hashing import b64, unb64
from ledger.receipt import ReceiptError, verify_receipt

ROOT = Path(__file__).resolve().parent.parent


def _flip_b64(value: str, bit: int) -> str:
    raw = bytearray(unb64(value))
    raw[bit // 8 % len(raw)] ^= 1 << (bit % 8)
    return b64(bytes(raw))


def _flip_text(text: str, index: int) -> str:
    """Flip the low bit of the ASCII character at `index` (the text stays valid UTF-8)."""
    assert ord(text[index]) < 128
    return text[:index] + chr(ord(text[index]) ^ 1) + text[index + 1 :]


def _mutations(entry: dict, proof: dict, cp: dict) -> list[tuple[str, int, object]]:
    """(name, which object: 0 entry / 1 proof / 2 checkpoint, mutated object), each one bit off."""
    out: list[tuple[str, int, object]] = []
    text = entry["canonical"]
    ascii_at = [i for i, ch in enumerate(text) if ord(ch) < 128]
    for i in sorted(
        {ascii_at[0], ascii_at[len(ascii_at) // 3], ascii_at[len(ascii_at) // 2], ascii_at[-1]}
        | {text.index('"amount":') + 9, text.index('"seq":') + 6}
    ):
        out.append((f"canonical[{i}]", 0, {**entry, "canonical": _flip_text(text, i)}))
    for bit in (0, 131, 255):
        out.append((f"entry.leaf_hash bit {bit}", 0, {**entry, "leaf_hash": _flip_b64(entry["leaf_hash"], bit)}))
        out.append((f"proof.leaf_hash bit {bit}", 1, {**proof, "leaf_hash": _flip_b64(proof["leaf_hash"], bit)}))
    for j in range(len(proof["proof"])):
        for bit in (7, 200):
            path = list(proof["proof"])
            path[j] = _flip_b64(path[j], bit)
            out.append((f"proof[{j}] bit {bit}", 1, {**proof, "proof": path}))
    out.append(("proof.leaf_index", 1, {**proof, "leaf_index": proof["leaf_index"] ^ 1}))
    out.append(("proof.tree_size", 1, {**proof, "tree_size": proof["tree_size"] ^ 1}))
    for bit in (0, 100, 255):
        out.append((f"checkpoint.root_hash bit {bit}", 2, {**cp, "root_hash": _flip_b64(cp["root_hash"], bit)}))
        out.append((f"checkpoint.chain_head bit {bit}", 2, {**cp, "chain_head": _flip_b64(cp["chain_head"], bit)}))
    out.append(("checkpoint.tree_size", 2, {**cp, "tree_size": cp["tree_size"] ^ 1}))
    out.append(("checkpoint.timestamp", 2, {**cp, "timestamp": _flip_text(cp["timestamp"], 3)}))
    for bit in (0, 300, 511):
        out.append((f"checkpoint.signature bit {bit}", 2, {**cp, "signature": _flip_b64(cp["signature"], bit)}))
    # The note: its root line, and its signature (the bytes after the 4-byte key id).
    lines = cp["note"].split("\n")
    root_line = 2
    for bit in (3, 250):
        nl = list(lines)
        nl[root_line] = _flip_b64(nl[root_line], bit)
        out.append((f"note root bit {bit}", 2, {**cp, "note": "\n".join(nl)}))
    sig_line = next(i for i, line in enumerate(lines) if line.startswith("\u2014 "))
    dash, name, blob = lines[sig_line].split(" ")
    for bit in (32, 33 + 8 * 30, 8 * 68 - 1):
        nl = list(lines)
        nl[sig_line] = f"{dash} {name} {_flip_b64(blob, bit)}"
        out.append((f"note signature bit {bit}", 2, {**cp, "note": "\n".join(nl)}))
    out.append(
        (
            "note size line",
            2,
            {**cp, "note": cp["note"].replace(f"\n{cp['tree_size']}\n", f"\n{cp['tree_size'] ^ 1}\n", 1)},
        )
    )
    return out


def _write(tmp: Path, objs: list[dict]) -> list[str]:
    paths = []
    for name, obj in zip(("entry", "proof", "checkpoint", "pubkey"), objs):
        p = tmp / f"{name}.json"
        p.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
        paths.append(str(p))
    return paths


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


async def _check_receipt(client, consumer: dict, seq: int, kind: str, tmp: Path, checkpointer: dict) -> None:
    r = await client.get(f"/v1/ledger/entries/{seq}", headers=consumer["headers"])
    assert r.status_code == 200, r.text
    entry = r.json()
    assert entry["seq"] == seq and entry["kind"] == kind
    assert json.loads(entry["canonical"])["consumer_id"] == consumer["id"]

    # Later, after more activity, a checkpoint that covers the entry.
    cp = await new_checkpoint(client, checkpointer)
    assert cp == await latest_checkpoint(client) and cp["tree_size"] > seq + 1
    proof = await inclusion_proof(client, seq, cp["tree_size"])
    key = await ledger_public_key(client)
    verify_receipt(entry, proof, cp, key)

    paths = _write(tmp, [entry, proof, cp, key])
    ok = await asyncio.to_thread(_cli, "-m", "ledger.receipt", *paths)
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK: entry {seq} "), ok.stdout + ok.stderr
    ok = await asyncio.to_thread(_cli, "-m", "service.cli", "ledger", "verify-receipt", *paths)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    originals = [entry, proof, cp, key]
    mutations = _mutations(entry, proof, cp)
    assert len(mutations) > 30
    jobs = []
    for n, (name, which, mutated) in enumerate(mutations):
        objs = copy.deepcopy(originals)
        assert mutated != objs[which], name
        objs[which] = mutated
        with pytest.raises(ReceiptError):
            verify_receipt(*objs)
        d = tmp / f"mutation{n}"
        d.mkdir()
        jobs.append((name, _write(d, objs)))
    limit = asyncio.Semaphore(8)

    async def run(name: str, paths: list[str]) -> None:
        async with limit:
            bad = await asyncio.to_thread(_cli, "-m", "ledger.receipt", *paths)
        assert bad.returncode == 1 and bad.stdout.startswith("FAIL: "), (name, bad.stdout, bad.stderr)

    await asyncio.gather(*(run(name, paths) for name, paths in jobs))
    # A proof at another size, or another entry's proof, is not this receipt.
    other = await inclusion_proof(client, seq, cp["tree_size"] - 1)
    with pytest.raises(ReceiptError):
        verify_receipt(entry, other, cp, key)
    with pytest.raises(ReceiptError):
        verify_receipt(entry, await inclusion_proof(client, seq + 1, cp["tree_size"]), cp, key)
    # Another key does not vouch for the checkpoint.
    fake = {**key, "public_key": _flip_b64(key["public_key"], 9)}
    with pytest.raises(ReceiptError):
        verify_receipt(entry, proof, cp, fake)
    # Everything restored: the files verify again (the mutations did not leak into the originals).
    ok = await asyncio.to_thread(_cli, "-m", "ledger.receipt", *_write(tmp, originals))
    assert ok.returncode == 0, ok.stdout


async def test_confirmation_receipt_verifies_offline_and_refuses_any_flipped_bit(client, tmp_path):
    mix = await ledger_mix(client)
    li, gym = mix["li"], mix["gym"]
    card = await buy_card(client, li, {"id": mix["cards"]["a"]["product_id"]})
    done = await answer(client, li, await ask(client, gym, card, amount=30_000), "confirm")
    seq = done["ledger_seq"]
    assert done["status"] == "confirmed" and done["release_amount"] == 25_000
    # More activity after the receipt was handed out.
    await redeem(client, mix["spa"], mix["han"], mix["cards"]["b"], uses=1)
    await buy_card(client, mix["han"], {"id": mix["cards"]["b"]["product_id"]})
    await _check_receipt(client, li, seq, "release", tmp_path, li)


async def test_refund_receipt_verifies_offline_and_refuses_any_flipped_bit(client, tmp_path):
    mix = await ledger_mix(client)
    han = mix["han"]
    out = await refund(client, han, mix["cards"]["d"])  # its pending hold is voided first
    seq = out["ledger_seq"]
    assert out["rule"] == "consumer_quit" and out["amount"] == 100_000 - 24_000
    await redeem(client, mix["spa"], han, mix["cards"]["b"], uses=1)
    await buy_card(client, mix["li"], {"id": mix["cards"]["b"]["product_id"]})
    await _check_receipt(client, han, seq, "refund", tmp_path, mix["gym"])
