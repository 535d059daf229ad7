"""The ledger over HTTP (SPEC §4, §6, §7): entries, scoping, checkpoints, RFC 9162 proofs, reconciliation."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest

from api_tests.factories import (
    assert_error,
    buy_card,
    consistency_proof,
    create_auditor,
    create_regulator,
    inclusion_proof,
    latest_checkpoint,
    ledger_entries,
    ledger_mix,
    ledger_public_key,
    new_checkpoint,
    reconciliation,
    redeem,
)
from ledger.checkpoint import CheckpointError, verify_checkpoint_json, verify_note
from ledger.hashing import unb64
from ledger.merkle import (
    ProofError,
    consistency_proof_from_leaves,
    inclusion_proof_from_leaves,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

MONEY_KINDS = {"purchase", "hold", "release", "void", "refund"}


def _body(entry: dict) -> dict:
    return orjson.loads(entry["canonical"])


def _by_seq(entries: list[dict]) -> dict[int, dict]:
    return {e["seq"]: e for e in entries}


async def test_every_money_movement_is_a_canonical_hashed_chained_entry_without_personal_data(client):
    mix = await ledger_mix(client)
    auditor = await create_auditor(client)
    entries = await ledger_entries(client, auditor)
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    by_seq = _by_seq(entries)

    # Hash chain from 32 zero bytes; leaf = SHA-256(0x00 ‖ canonical); canonical = sorted keys, no spaces.
    prev = bytes(32)
    for e in entries:
        body = _body(e)
        text = e["canonical"]
        assert text == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert body["seq"] == e["seq"] and body["kind"] == e["kind"] and body["time"] == e["time"]
        leaf = hashlib.sha256(b"\x00" + text.encode("utf-8")).digest()
        assert unb64(e["leaf_hash"]) == leaf
        prev = hashlib.sha256(prev + leaf).digest()
        assert unb64(e["chain_hash"]) == prev
        for v in body.values():
            assert not isinstance(v, float)

    # Each answer's ledger_seq points at the entry of the right kind, card and amount.
    cards = mix["cards"]
    for card in mix["purchases"]:
        b = _body(by_seq[card["ledger_seq"]])
        assert (b["kind"], b["card_id"], b["amount"], b["consumer_id"], b["merchant_id"]) == (
            "purchase",
            card["id"],
            card["price"],
            card["consumer_id"],
            card["merchant_id"],
        )
    for h in mix["holds"]:
        b = _body(by_seq[h["hold_ledger_seq"]])
        assert (b["kind"], b["redemption_id"], b["amount"], b["held_delta"]) == (
            "hold",
            h["id"],
            h["hold_amount"],
            h["hold_amount"],
        )
    for done in mix["confirms"]:
        b = _body(by_seq[done["ledger_seq"]])
        assert (b["kind"], b["redemption_id"], b["amount"]) == ("release", done["id"], done["release_amount"])
    assert sorted(d["release_amount"] for d in mix["confirms"]) == [3_333, 3_334, 10_000, 20_000]
    for v in mix["voids"]:
        b = _body(by_seq[v["ledger_seq"]])
        assert (b["kind"], b["redemption_id"], b["reason"]) == ("void", v["id"], "rejected")
    quit_, cooling = mix["refunds"]
    b = _body(by_seq[quit_["ledger_seq"]])
    assert (b["kind"], b["card_id"], b["amount"], b["merchant_share"], b["rule"]) == (
        "refund",
        cards["a"]["id"],
        88_000,
        2_000,
        "consumer_quit",
    )
    b = _body(by_seq[cooling["ledger_seq"]])
    assert (b["kind"], b["card_id"], b["amount"], b["merchant_share"], b["rule"]) == (
        "refund",
        cards["c"]["id"],
        10_001,
        0,
        "cooling_off",
    )
    # The refund of card a voided its pending hold first: a void entry with the refund's rule.
    refund_voids = [
        e
        for e in entries
        if e["kind"] == "void" and _body(e)["card_id"] == cards["a"]["id"] and _body(e)["reason"] == "consumer_quit"
    ]
    assert len(refund_voids) == 1 and refund_voids[0]["seq"] < quit_["ledger_seq"]

    kinds = {e["kind"] for e in entries}
    assert MONEY_KINDS <= kinds
    counts = {k: sum(1 for e in entries if e["kind"] == k) for k in MONEY_KINDS}
    assert counts == {"purchase": 4, "hold": len(mix["holds"]) == 8 and 8, "release": 4, "void": 3, "refund": 2}

    # No personal data: no consumer's phone or name, no merchant's name, anywhere in any entry.
    forbidden = [
        mix["li"]["phone"],
        mix["han"]["phone"],
        "Li Lei",
        "李雷",
        "Han Meimei",
        "韩梅梅",
        "Iron Gym",
        "铁馆健身",
        "Lotus Spa",
        "莲花水疗",
    ]
    for e in entries:
        blob = json.dumps(e, ensure_ascii=False)
        for word in forbidden:
            assert word not in blob, (word, e)
        # nor the phone's digits in some other spelling (e.g. without the leading 1)
        for phone in (mix["li"]["phone"], mix["han"]["phone"]):
            assert phone[3:] not in e["canonical"]


async def test_entries_are_scoped_to_the_party(client):
    mix = await ledger_mix(client)
    auditor = await create_auditor(client)
    regulator = await create_regulator(client)
    everything = await ledger_entries(client, auditor)
    assert await ledger_entries(client, regulator) == everything
    n = len(everything)

    for party, field in (
        (mix["gym"], "merchant_id"),
        (mix["spa"], "merchant_id"),
        (mix["li"], "consumer_id"),
        (mix["han"], "consumer_id"),
    ):
        own = [e for e in everything if _body(e).get(field) == party["id"]]
        others = [e for e in everything if _body(e).get(field) != party["id"]]
        assert own and others
        assert await ledger_entries(client, party, limit=2) == own
        r = await client.get(f"/v1/ledger/entries/{own[-1]['seq']}", headers=party["headers"])
        assert r.status_code == 200 and r.json() == own[-1]
        for e in others:
            assert_error(
                await client.get(f"/v1/ledger/entries/{e['seq']}", headers=party["headers"]), 404, "entry_not_found"
            )
    # li's entries are not han's: a consumer sees exactly the entries naming it.
    li_seqs = {e["seq"] for e in await ledger_entries(client, mix["li"])}
    han_seqs = {e["seq"] for e in await ledger_entries(client, mix["han"])}
    assert li_seqs and han_seqs and not li_seqs & han_seqs

    for who in (auditor, regulator):
        for e in everything[:: max(1, n // 7)]:
            r = await client.get(f"/v1/ledger/entries/{e['seq']}", headers=who["headers"])
            assert r.status_code == 200 and r.json() == e
        assert_error(await client.get(f"/v1/ledger/entries/{n}", headers=who["headers"]), 404, "entry_not_found")

    assert_error(await client.get("/v1/ledger/entries"), 401)
    assert_error(await client.get("/v1/ledger/entries/0"), 401)
    assert_error(await client.get("/v1/ledger/entries", headers={"Authorization": "Bearer au_nope"}), 401)
    assert_error(await client.get("/v1/ledger/entries/0", headers={"Authorization": "Bearer cs_nope"}), 401)


async def test_checkpoints_are_signed_and_state_the_root_of_all_leaves(client):
    mix = await ledger_mix(client)
    auditor = await create_auditor(client)
    key = await ledger_public_key(client)
    pub = unb64(key["public_key"])
    assert len(pub) == 32 and len(key["key_id"]) == 8

    def check(cp: dict, entries: list[dict]) -> None:
        verify_checkpoint_json(cp, pub)
        size, root = verify_note(cp["note"], key["verifier_key"], cp["origin"])
        assert verify_note(cp["note"], pub, cp["origin"]) == (size, root)
        assert size == cp["tree_size"] == len(entries)
        leaves = [unb64(e["leaf_hash"]) for e in entries]
        assert root == unb64(cp["root_hash"]) == root_from_leaves(leaves)
        assert cp["chain_head"] == entries[-1]["chain_hash"]
        lines = cp["note"].split("\n")
        assert lines[:3] == [cp["origin"], str(size), cp["root_hash"]] and lines[3] == ""
        assert lines[4].startswith(f"\u2014 {cp['origin']} ")

    entries = await ledger_entries(client, auditor)
    cp1 = await latest_checkpoint(client)
    check(cp1, entries)
    # Another key does not verify it, and an edited checkpoint does not verify.
    with pytest.raises(CheckpointError):
        verify_checkpoint_json(cp1, bytes(32 - 1) + b"\x01")
    with pytest.raises(CheckpointError):
        verify_checkpoint_json({**cp1, "timestamp": "2000-01-01T00:00:00Z"}, pub)

    # Nothing new: POST gives back the checkpoint of the same size.
    again = await new_checkpoint(client, auditor)
    assert again["tree_size"] == cp1["tree_size"] and again["root_hash"] == cp1["root_hash"]

    # New entries, then a new checkpoint that covers them; the old one is still served by size.
    await redeem(client, mix["gym"], mix["han"], mix["cards"]["d"], amount=600)
    await buy_card(client, mix["li"], {"id": mix["cards"]["a"]["product_id"]})
    assert (await latest_checkpoint(client))["tree_size"] == cp1["tree_size"]  # not made yet
    cp2 = await new_checkpoint(client, mix["li"])
    entries = await ledger_entries(client, auditor)
    assert cp2["tree_size"] == len(entries) == cp1["tree_size"] + 3  # hold, release, purchase
    check(cp2, entries)
    assert await latest_checkpoint(client) == cp2
    r = await client.get("/v1/ledger/checkpoint", params={"tree_size": cp1["tree_size"]})
    assert r.status_code == 200 and r.json() == cp1
    assert_error(
        await client.get("/v1/ledger/checkpoint", params={"tree_size": cp1["tree_size"] + 1}),
        404,
        "checkpoint_not_found",
    )
    assert_error(await client.post("/v1/ledger/checkpoints"), 401)


async def test_inclusion_and_consistency_proofs_verify_at_every_size(client):
    mix = await ledger_mix(client)
    auditor = await create_auditor(client)
    signed = [await new_checkpoint(client, auditor)]
    await redeem(client, mix["spa"], mix["han"], mix["cards"]["b"], uses=1)
    signed.append(await new_checkpoint(client, auditor))
    await buy_card(client, mix["han"], {"id": mix["cards"]["b"]["product_id"]})
    signed.append(await new_checkpoint(client, mix["han"]))
    entries = await ledger_entries(client, auditor)
    leaves = [unb64(e["leaf_hash"]) for e in entries]
    n = len(leaves)
    assert n == signed[-1]["tree_size"] and len({cp["tree_size"] for cp in signed}) == 3
    roots = {size: root_from_leaves(leaves[:size]) for size in range(1, n + 1)}
    for cp in signed:
        assert unb64(cp["root_hash"]) == roots[cp["tree_size"]]

    # Inclusion: every entry, at every tree size that holds it.
    sizes = sorted({1, 2, 3, 5, 8, 13, n // 2, n - 1, n} | {cp["tree_size"] for cp in signed})
    checked = 0
    for size in sizes:
        for seq in range(size):
            p = await inclusion_proof(client, seq, size)
            assert (p["leaf_index"], p["tree_size"], p["leaf_hash"]) == (seq, size, entries[seq]["leaf_hash"])
            path = [unb64(h) for h in p["proof"]]
            assert path == inclusion_proof_from_leaves(seq, leaves[:size])
            verify_inclusion(leaves[seq], seq, size, path, roots[size])
            if size > 1:  # the same proof does not put another leaf there
                with pytest.raises(ProofError):
                    verify_inclusion(leaves[(seq + 1) % size], seq, size, path, roots[size])
            checked += 1
    assert checked > n

    # Default tree size: the latest checkpoint's.
    r = await client.get("/v1/ledger/entries/0/proof")
    assert r.status_code == 200 and r.json()["tree_size"] == signed[-1]["tree_size"]

    # Consistency between every pair of signed checkpoints, against the signed roots.
    for i, old in enumerate(signed):
        for new in signed[i:]:
            p = await consistency_proof(client, old["tree_size"], new["tree_size"])
            assert (p["first"], p["second"]) == (old["tree_size"], new["tree_size"])
            verify_consistency(
                old["tree_size"],
                new["tree_size"],
                unb64(old["root_hash"]),
                unb64(new["root_hash"]),
                [unb64(h) for h in p["proof"]],
            )
    # …and between every pair of sizes, against roots computed from the leaves.
    for first in range(1, n + 1):
        for second in range(first, n + 1):
            p = await consistency_proof(client, first, second)
            path = [unb64(h) for h in p["proof"]]
            assert path == consistency_proof_from_leaves(first, leaves[:second])
            verify_consistency(first, second, roots[first], roots[second], path)
            if first < second:  # a wrong old root is refused
                with pytest.raises(ProofError):
                    verify_consistency(first, second, hashlib.sha256(roots[first]).digest(), roots[second], path)


async def test_bad_proof_parameters_are_clean_4xx(client):
    mix = await ledger_mix(client)
    auditor = await create_auditor(client)
    n = len(await ledger_entries(client, auditor))
    assert n > 3
    bad = [
        ("/v1/ledger/entries/0/proof?tree_size=0", 422, "validation_error"),
        (f"/v1/ledger/entries/0/proof?tree_size={n + 1}", 422, "tree_size_too_large"),
        ("/v1/ledger/entries/0/proof?tree_size=-3", 422, "validation_error"),
        ("/v1/ledger/entries/0/proof?tree_size=abc", 422, "validation_error"),
        (f"/v1/ledger/entries/0/proof?tree_size={2**70}", 422, "validation_error"),
        ("/v1/ledger/entries/3/proof?tree_size=3", 404, "entry_not_in_tree"),
        (f"/v1/ledger/entries/{n}/proof?tree_size={n}", 404, "entry_not_in_tree"),
        (f"/v1/ledger/entries/-1/proof?tree_size={n}", 422, "invalid_field"),
        ("/v1/ledger/consistency?first=3&second=2", 422, "invalid_range"),
        ("/v1/ledger/consistency?first=0&second=2", 422, "validation_error"),
        (f"/v1/ledger/consistency?first=1&second={n + 1}", 422, "tree_size_too_large"),
        ("/v1/ledger/consistency?first=1", 422, "validation_error"),
        ("/v1/ledger/consistency?first=x&second=2", 422, "validation_error"),
        ("/v1/ledger/checkpoint?tree_size=-1", 422, "validation_error"),
    ]
    for url, status, code in bad:
        r = await client.get(url)
        err = assert_error(r, status)
        assert r.status_code < 500
        if code != "validation_error":
            assert err["code"] == code, (url, err)
    # The edges that are fine.
    assert (await client.get(f"/v1/ledger/entries/{n - 1}/proof?tree_size={n}")).status_code == 200
    r = await client.get(f"/v1/ledger/consistency?first={n}&second={n}")
    assert r.status_code == 200 and r.json()["proof"] == []
    assert mix["gym"]["id"]


async def test_reconciliation_balances_after_a_mix_of_movements(client):
    mix = await ledger_mix(client)
    auditor = await create_auditor(client)
    t = mix["totals"]
    assert t == {"paid_in": 220_002, "released": 38_667, "refunded": 98_001, "held": 1_000, "escrow": 83_334}
    rec = await reconciliation(client, auditor)
    for k in ("paid_in", "escrow", "held", "released", "refunded"):
        assert rec[k] == t[k], (k, rec)
        assert rec["ledger"][k] == t[k], (k, rec)
    assert rec["paid_in"] == rec["escrow"] + rec["released"] + rec["refunded"]
    assert rec["consistent"] is True

    # The ledger's own entries sum to the same totals.
    entries = await ledger_entries(client, auditor)
    sums = dict.fromkeys(("paid_in", "released", "refunded", "held"), 0)
    for e in entries:
        b = _body(e)
        if b["kind"] == "purchase":
            sums["paid_in"] += b["amount"]
        elif b["kind"] == "release":
            sums["released"] += b["amount"]
        elif b["kind"] == "refund":
            sums["refunded"] += b["amount"]
            sums["released"] += b["merchant_share"]
        sums["held"] += b.get("held_delta", 0)
    assert sums == {k: t[k] for k in sums}
    assert rec["ledger"]["entries"] == len(entries)

    # One more confirm: the totals move by exactly its release, and still reconcile.
    done = await redeem(client, mix["spa"], mix["han"], mix["cards"]["b"], uses=1)  # the last use: 10001 - 6667
    assert done["release_amount"] == 3_334
    rec = await reconciliation(client, await create_regulator(client))
    assert (rec["released"], rec["escrow"], rec["consistent"]) == (38_667 + 3_334, 83_334 - 3_334, True)

    assert_error(await client.get("/v1/escrow/reconciliation"), 401)
    assert_error(await client.get("/v1/escrow/reconciliation", headers=mix["li"]["headers"]), 403)
    assert_error(await client.get("/v1/escrow/reconciliation", headers=mix["gym"]["headers"]), 403)
