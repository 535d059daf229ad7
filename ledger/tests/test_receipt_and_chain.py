"""Offline receipts and the whole-ledger walk, on a small in-memory ledger."""

from __future__ import annotations

import base64
import json

import pytest

from ledger.canonical import canonical_json
from ledger.checkpoint import (
    Checkpoint,
    generate_private_key_pem,
    load_private_key,
    public_key_json,
    sign_checkpoint,
    to_json,
)
from ledger.hashing import GENESIS_HEAD, b64, chain_hash, leaf_hash
from ledger.merkle import (
    Frontier,
    ProofError,
    consistency_proof,
    consistency_proof_plan,
    inclusion_proof,
    verify_consistency,
)
from ledger.receipt import ReceiptError, main, verify_receipt
from ledger.verify import verify_chain

ORIGIN = "escrow.example/ledger"
KEY = load_private_key(generate_private_key_pem())


def make_entry(seq: int, amount: int = 1000) -> bytes:
    return canonical_json(
        {
            "seq": seq,
            "kind": "hold",
            "time": f"2025-06-01T12:00:{seq % 60:02d}Z",
            "card_id": f"card_{seq % 3}",
            "amount": amount,
            "memo": "核销",
        }
    )


def make_rows(canonicals: list[bytes]) -> list[tuple[int, bytes, bytes, bytes]]:
    rows, head = [], GENESIS_HEAD
    for seq, canonical in enumerate(canonicals):
        leaf = leaf_hash(canonical)
        head = chain_hash(head, leaf)
        rows.append((seq, canonical, leaf, head))
    return rows


class Ledger:
    """The service's side in miniature: rows, stored nodes, signed checkpoint."""

    def __init__(self, size: int) -> None:
        self.rows = make_rows([make_entry(i) for i in range(size)])
        self.frontier, self.nodes = Frontier(), {}
        for _, _, leaf, _ in self.rows:
            for level, index, h in self.frontier.append(leaf):
                self.nodes[(level, index)] = h

    def entry(self, seq: int) -> dict:
        _, canonical, leaf, chain = self.rows[seq]
        body = json.loads(canonical)
        return {
            "seq": seq,
            "kind": body["kind"],
            "time": body["time"],
            "canonical": canonical.decode("utf-8"),
            "leaf_hash": b64(leaf),
            "chain_hash": b64(chain),
        }

    def proof(self, seq: int) -> dict:
        size = self.frontier.size
        path = inclusion_proof(seq, size, self.nodes)
        return {
            "leaf_index": seq,
            "tree_size": size,
            "leaf_hash": b64(self.rows[seq][2]),
            "proof": [b64(h) for h in path],
        }

    def checkpoint(self) -> dict:
        cp = Checkpoint(ORIGIN, self.frontier.size, self.frontier.root(), self.rows[-1][3], "2025-06-01T12:01:00Z")
        return to_json(sign_checkpoint(cp, KEY))


LEDGER = Ledger(11)
PUBLIC_KEY = public_key_json(ORIGIN, KEY)


def receipt(seq: int = 6) -> tuple[dict, dict, dict, dict]:
    return LEDGER.entry(seq), LEDGER.proof(seq), LEDGER.checkpoint(), dict(PUBLIC_KEY)


def flip_b64(value: str, bit: int) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[bit // 8] ^= 1 << (bit % 8)
    return b64(bytes(raw))


# ---------------------------------------------------------------- receipts


@pytest.mark.parametrize("seq", range(11))
def test_good_receipt_verifies(seq):
    verify_receipt(*receipt(seq))


def test_receipt_refuses_any_flipped_bit_of_canonical():
    entry, proof, cp, pk = receipt()
    raw = entry["canonical"].encode("utf-8")
    for i in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[i // 8] ^= 1 << (i % 8)
        text = bad.decode("utf-8", errors="replace")
        with pytest.raises(ReceiptError):
            verify_receipt({**entry, "canonical": text}, proof, cp, pk)


@pytest.mark.parametrize(
    "where",
    ["entry.leaf_hash", "proof.leaf_hash", "proof.proof", "checkpoint.root_hash", "checkpoint.signature", "public_key"],
)
def test_receipt_refuses_a_flipped_bit(where):
    for bit in range(0, 256, 7):
        entry, proof, cp, pk = receipt()
        obj_name, field_name = where.split(".") if "." in where else ("pk", "public_key")
        obj = {"entry": entry, "proof": proof, "checkpoint": cp, "pk": pk}[obj_name]
        if field_name == "proof":
            for i in range(len(obj["proof"])):
                proof["proof"] = list(LEDGER.proof(6)["proof"])
                proof["proof"][i] = flip_b64(proof["proof"][i], bit)
                with pytest.raises(ReceiptError, match="inclusion proof"):
                    verify_receipt(entry, proof, cp, pk)
            continue
        obj[field_name] = flip_b64(obj[field_name], bit)
        with pytest.raises(ReceiptError):
            verify_receipt(entry, proof, cp, pk)


def test_receipt_refuses_mismatched_pieces():
    entry, proof, cp, pk = receipt()
    cases = [
        ({**entry, "seq": 7}, proof, cp, pk),  # seq not the one inside canonical
        (entry, {**proof, "leaf_index": 7}, cp, pk),  # proof is for another leaf
        (entry, {**proof, "tree_size": 10}, cp, pk),  # proof at another size
        (LEDGER.entry(5), proof, cp, pk),  # another entry
        (entry, proof, {**cp, "note": cp["note"].replace("\n11\n", "\n12\n")}, pk),
        (entry, proof, cp, public_key_json(ORIGIN, load_private_key(generate_private_key_pem()))),
        (entry, {**proof, "proof": proof["proof"][:-1]}, cp, pk),
        (entry, {**proof, "proof": "not a list"}, cp, pk),
    ]
    for case in cases:
        with pytest.raises(ReceiptError):
            verify_receipt(*case)


def test_receipt_command_line(tmp_path, capsys):
    paths = []
    for name, obj in zip(["entry", "proof", "checkpoint", "pubkey"], receipt()):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
        paths.append(str(path))
    assert main(paths) == 0 and capsys.readouterr().out.startswith("OK")
    entry = json.loads(open(paths[0], encoding="utf-8").read())
    entry["canonical"] = entry["canonical"].replace("1000", "9000")
    (tmp_path / "entry.json").write_text(json.dumps(entry), encoding="utf-8")
    assert main(paths) == 1 and "leaf_hash" in capsys.readouterr().out


# ---------------------------------------------------------------- whole-ledger walk


def test_intact_ledger_verifies_with_root_and_head():
    progress = []
    report = verify_chain(LEDGER.rows, progress=progress.append, progress_every=4, snapshot_sizes={0, 5, 11})
    assert report.ok and report.size == 11
    assert report.root == LEDGER.frontier.root() and report.head == LEDGER.rows[-1][3]
    assert progress == [4, 8]
    assert report.snapshots[11] == (report.root, report.head)
    assert set(report.snapshots) == {0, 5, 11}


def test_str_canonical_is_accepted():
    rows = [(s, c.decode("utf-8"), leaf, h) for s, c, leaf, h in LEDGER.rows]
    assert verify_chain(rows).ok


def test_changed_entry_is_named():
    rows = list(LEDGER.rows)
    seq, canonical, leaf, chain = rows[4]
    rows[4] = (seq, canonical.replace(b'"amount":1000', b'"amount":9000'), leaf, chain)
    report = verify_chain(rows)
    assert (report.ok, report.bad_seq, report.reason, report.size) == (False, 4, "leaf hash mismatch", 4)


def test_changed_entry_with_recomputed_leaf_breaks_the_chain():
    rows = list(LEDGER.rows)
    canonical = make_entry(4, amount=9000)
    rows[4] = (4, canonical, leaf_hash(canonical), rows[4][3])
    report = verify_chain(rows)
    assert (report.bad_seq, report.reason) == (4, "chain hash mismatch")


def test_deleted_entry_is_a_gap():
    rows = LEDGER.rows[:7] + LEDGER.rows[8:]
    report = verify_chain(rows)
    assert (report.ok, report.bad_seq, report.reason) == (False, 7, "missing entry (gap)")


def test_swapped_entries_are_found():
    rows = list(LEDGER.rows)
    # Rows moved whole under their seq numbers: the entry states another seq.
    rows[3], rows[8] = (3, *rows[8][1:]), (8, *rows[3][1:])
    report = verify_chain(rows)
    assert (report.ok, report.bad_seq, report.reason) == (False, 3, "seq mismatch")
    # Rows moved whole with their seq: out of order.
    rows = list(LEDGER.rows)
    rows[3], rows[8] = rows[8], rows[3]
    report = verify_chain(rows)
    assert (report.ok, report.bad_seq, report.reason) == (False, 3, "missing entry (gap)")
    # Entries re-numbered and leaf hashes recomputed: the chain still catches the swap.
    swapped = [make_entry(i) for i in range(11)]
    swapped[3], swapped[8] = make_entry(3, amount=1800), make_entry(8, amount=1300)
    rows = list(LEDGER.rows)
    for seq in (3, 8):
        rows[seq] = (seq, swapped[seq], leaf_hash(swapped[seq]), rows[seq][3])
    report = verify_chain(rows)
    assert (report.ok, report.bad_seq, report.reason) == (False, 3, "chain hash mismatch")


def test_nested_seq_does_not_fool_the_seq_check():
    canonicals = [
        make_entry(0),
        canonical_json({"a": {"seq": 1}, "seq": 7}),
        canonical_json({"seq": 2, "z": {"seq": 2}}),
    ]
    report = verify_chain(make_rows(canonicals))
    assert (report.bad_seq, report.reason) == (1, "seq mismatch")
    canonicals[1] = canonical_json({"a": {"seq": 7}, "seq": 1})
    canonicals.append(canonical_json({"seq": 9, "z": {"seq": 3}}))
    report = verify_chain(make_rows(canonicals))
    assert (report.bad_seq, report.reason) == (3, "seq mismatch")
    assert verify_chain(make_rows(canonicals[:3])).ok


def test_rewritten_tail_passes_the_chain_but_not_the_checkpoint():
    old = Ledger(11)
    old_root, old_size = old.frontier.root(), old.frontier.size
    # Rewrite entries 6.. and everything after, recomputing every hash, and append more.
    forged = [make_entry(i) for i in range(6)] + [make_entry(i, amount=1) for i in range(6, 15)]
    rows = make_rows(forged)
    report = verify_chain(rows)
    assert report.ok and report.size == 15  # the chain alone cannot tell

    frontier, nodes = Frontier(), {}
    for _, _, leaf, _ in rows:
        for level, index, h in frontier.append(leaf):
            nodes[(level, index)] = h
    proof = consistency_proof(old_size, 15, {n: nodes[n] for n in consistency_proof_plan(old_size, 15)})
    with pytest.raises(ProofError):
        verify_consistency(old_size, 15, old_root, frontier.root(), proof)
    # An honest extension of the old ledger is consistent.
    honest = make_rows([make_entry(i) for i in range(15)])
    frontier, nodes = Frontier(), {}
    for _, _, leaf, _ in honest:
        for level, index, h in frontier.append(leaf):
            nodes[(level, index)] = h
    verify_consistency(old_size, 15, old_root, frontier.root(), consistency_proof(old_size, 15, nodes))
