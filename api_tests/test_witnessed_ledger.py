"""Witnessed checkpoints (SPEC §11): two real witness processes cosign; receipts; a witness down, restarted, forged.

The service runs in-process (both databases); the witnesses are `escrow witness serve` processes on
loopback ports, each with its own key and state file, knowing only the log's vkey.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson
import pytest
from sqlalchemy import update

from api_tests.factories import buy_card, ledger_mix, new_checkpoint, publish_count
from api_tests.realserver import REPO
from api_tests.witness_procs import WitnessProcess
from ledger.checkpoint import Checkpoint, sign_checkpoint, verifier_key, verify_checkpoint_json
from ledger.cosignature import verify_cosigned
from ledger.hashing import leaf_hash, unb64
from ledger.merkle import verify_inclusion
from ledger.tlog_proof import TlogProofError, parse_tlog_proof, verify_tlog_proof
from ledger.witness import add_checkpoint_body
from service.db.models import WitnessState
from service.ledger_api import witnessing


@pytest.fixture
async def witnessed(ctx, tmp_path):
    log_vkey = verifier_key(ctx.keys.key_name, ctx.keys.public_key)
    ws = [
        WitnessProcess(tmp_path / "bank", "bank.example/witness", log_vkey).start(),
        WitnessProcess(tmp_path / "amr", "amr.example/witness", log_vkey).start(),
    ]
    saved = (ctx.extras.get("witnesses"), ctx.settings.witness_quorum, ctx.settings.witnesses)
    ctx.settings.witnesses = orjson.dumps([w.config() for w in ws]).decode()
    ctx.settings.witness_quorum = 2
    ctx.extras["witnesses"] = witnessing.configured(ctx.settings)
    try:
        yield {"log_vkey": log_vkey, "witnesses": ws}
    finally:
        ctx.extras["witnesses"], ctx.settings.witness_quorum, ctx.settings.witnesses = saved
        for w in ws:
            w.stop()


async def _round(ctx) -> dict:
    async with httpx.AsyncClient(timeout=10) as http:
        return await witnessing.witness_latest(ctx, http)


async def _receipt(client, seq: int, **params) -> str:
    r = await client.get(f"/v1/ledger/entries/{seq}/receipt", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def _state_size(w: WitnessProcess) -> int:
    return next(iter(orjson.loads(w.state_file.read_bytes())["logs"].values()))["size"]


def _verify_receipt_cli(path, log_vkey: str, vkeys: list[str], quorum: int) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "service.cli",
        "ledger",
        "verify-receipt",
        str(path),
        "--log-vkey",
        log_vkey,
        "--quorum",
        str(quorum),
    ]
    for v in vkeys:
        args += ["--witness-vkey", v]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)


async def test_cosigned_history_receipts_witness_down_and_restarted(client, ctx, witnessed, operator_headers, tmp_path):
    log_vkey, (bank, amr) = witnessed["log_vkey"], witnessed["witnesses"]
    vkeys = [bank.vkey, amr.vkey]
    mix = await ledger_mix(client)
    first = await new_checkpoint(client, mix["gym"])
    assert first["witnessed"] is False and first["cosignatures"] == []
    r = await _round(ctx)
    assert r["results"] == {"bank.example/witness": "cosigned", "amr.example/witness": "cosigned"}, r
    assert _state_size(bank) == _state_size(amr) == first["tree_size"]

    cp = (await client.get("/v1/ledger/checkpoint")).json()
    assert cp["witnessed"] is True and cp["quorum"] == 2
    assert [c["name"] for c in cp["cosignatures"]] == ["bank.example/witness", "amr.example/witness"]
    assert verify_cosigned(cp["note"], log_vkey, vkeys, 2).tree_size == first["tree_size"]
    verify_checkpoint_json(cp, ctx.keys.public_key)  # the JSON form still verifies as before
    listed = (await client.get("/v1/ledger/witnesses")).json()
    assert listed == {
        "log": {"origin": ctx.keys.key_name, "vkey": log_vkey},
        "quorum": 2,
        "witnesses": [
            {"name": "bank.example/witness", "vkey": bank.vkey},
            {"name": "amr.example/witness", "vkey": amr.vkey},
        ],
    }

    # A receipt: tlog-proof@v1, the proof the RFC 9162 endpoint gives, verified with the quorum.
    text = await _receipt(client, 3)
    p, checked = verify_tlog_proof(text, log_vkey, vkeys, 2)
    entry = (await client.get("/v1/ledger/entries/3", headers=operator_headers)).json()
    assert p.extra == entry["canonical"].encode() and p.index == 3
    proof = (await client.get("/v1/ledger/entries/3/proof", params={"tree_size": checked.tree_size})).json()
    assert p.proof == [unb64(h) for h in proof["proof"]]
    verify_inclusion(leaf_hash(p.extra), 3, checked.tree_size, p.proof, checked.root_hash)
    f = tmp_path / "entry3.tlog-proof"
    f.write_text(text)
    ok = _verify_receipt_cli(f, log_vkey, vkeys, 2)
    assert ok.returncode == 0 and "cosigned by bank.example/witness, amr.example/witness" in ok.stdout, ok.stdout
    refused = _verify_receipt_cli(f, log_vkey, vkeys[:1], 2)
    assert refused.returncode == 1 and "quorum" in refused.stdout
    tampered = tmp_path / "tampered.tlog-proof"
    tampered.write_text(text.replace("index 3\n", "index 2\n"))
    assert _verify_receipt_cli(tampered, log_vkey, vkeys, 2).returncode == 1

    # More entries: each witness gets a consistency proof from the size it last cosigned.
    product = await publish_count(client, mix["spa"], price=5_000, uses=2)
    await buy_card(client, mix["li"], product)
    second = await new_checkpoint(client, mix["gym"])
    assert (await _round(ctx))["witnessed"] is True
    assert _state_size(bank) == _state_size(amr) == second["tree_size"] > first["tree_size"]

    # The regulator's witness goes down: the checkpoint is published unwitnessed and an alert is raised.
    amr.kill()
    await buy_card(client, mix["han"], product)
    third = await new_checkpoint(client, mix["gym"])
    r = await _round(ctx)
    assert r["results"]["amr.example/witness"] == "failed" and r["witnessed"] is False
    cp = (await client.get("/v1/ledger/checkpoint")).json()
    assert cp["tree_size"] == third["tree_size"] and cp["witnessed"] is False and len(cp["cosignatures"]) == 1
    alerts = (await client.get("/v1/alerts", headers=operator_headers)).json()["items"]
    missing = [a for a in alerts if a["kind"] == "witness_quorum_missing"]
    assert len(missing) == 1 and missing[0]["reasons"][0]["missing"] == ["amr.example/witness"]
    assert missing[0]["ledger_seq"] == third["tree_size"] - 1
    events = (await client.get("/v1/events", params={"types": "alert.created"}, headers=operator_headers)).json()
    assert [e["data"]["kind"] for e in events["items"]].count("witness_quorum_missing") == 1  # SPEC §9: alert.created
    await _round(ctx)  # still down (and backing off): no second alert for the same checkpoint
    alerts = (await client.get("/v1/alerts", headers=operator_headers)).json()["items"]
    assert len([a for a in alerts if a["kind"] == "witness_quorum_missing"]) == 1
    newest = third["tree_size"] - 1
    with pytest.raises(TlogProofError, match="quorum"):
        verify_tlog_proof(await _receipt(client, newest), log_vkey, vkeys, 2)
    verify_tlog_proof(await _receipt(client, newest), log_vkey, vkeys, 1)
    # An older entry's default receipt still uses the latest checkpoint that has its quorum.
    assert verify_tlog_proof(await _receipt(client, 3), log_vkey, vkeys, 2)[1].tree_size == second["tree_size"]

    # It comes back having lost its state: its 409 answer (size 0) is honoured and it cosigns again.
    amr.state_file.unlink()
    amr.start()
    async with ctx.engines.writer.begin() as conn:  # skip the back-off wait
        await conn.execute(update(WitnessState.__table__).values(retry_after_ms=0))
    r = await _round(ctx)
    assert r["results"]["amr.example/witness"] == "cosigned" and r["witnessed"] is True, r
    assert _state_size(amr) == third["tree_size"]

    # The bank's witness restarts mid-run and resumes from its state file (no 409 needed).
    bank.stop()
    bank.start()
    await buy_card(client, mix["li"], product)
    fourth = await new_checkpoint(client, mix["gym"])
    assert (await _round(ctx))["witnessed"] is True
    assert _state_size(bank) == _state_size(amr) == fourth["tree_size"]

    # A forged history signed with the platform's own key: bigger, but not an extension. Refused (422).
    forged_root = bytes(range(32))
    forged = sign_checkpoint(
        Checkpoint(ctx.keys.key_name, fourth["tree_size"] + 5, forged_root, bytes(32), "2026-12-01T00:00:00Z"),
        ctx.keys.signing_key,
    ).note
    proof = (await client.get("/v1/ledger/consistency", params={"first": 1, "second": fourth["tree_size"]})).json()
    async with httpx.AsyncClient(timeout=10) as http:
        for w in (bank, amr):
            resp = await http.post(
                w.url + "/add-checkpoint",
                content=add_checkpoint_body(fourth["tree_size"], [unb64(h) for h in proof["proof"]][:3], forged),
            )
            assert resp.status_code == 422, resp.text
    assert _state_size(bank) == fourth["tree_size"]
    good = parse_tlog_proof(await _receipt(client, 0))
    forged_receipt = text.split("\n\n", 1)[0] + "\n\n" + forged
    with pytest.raises(TlogProofError, match="quorum"):
        verify_tlog_proof(forged_receipt, log_vkey, vkeys, 1)
    assert good.index == 0


async def test_tiles_are_public_and_match_the_entries_and_the_checkpoint(client, operator_headers):
    from ledger.checkpoint import verify_note
    from ledger.merkle import root_from_leaves
    from ledger.tiles import parse_entry_bundle, split_hash_tile, tile_path

    mix = await ledger_mix(client)
    cp = await new_checkpoint(client, mix["gym"])
    n = cp["tree_size"]
    assert 0 < n < 256
    note = await client.get("/log/checkpoint")
    assert note.status_code == 200 and note.headers["content-type"].startswith("text/plain")
    vkey = (await client.get("/v1/ledger/public-key")).json()["verifier_key"]
    assert verify_note(note.text, vkey, cp["origin"])[0] == n
    # Anyone, with or without a token (a bad one too), reads the tiles: they are static, public data.
    for headers in ({}, {"Authorization": "Bearer cs_" + "0" * 43}, operator_headers):
        bundle = await client.get("/log/" + tile_path("entries", 0, n), headers=headers)
        assert bundle.status_code == 200
        tile = await client.get("/log/" + tile_path(0, 0, n), headers=headers)
        assert tile.status_code == 200 and tile.headers["cache-control"] == "public, max-age=5"
    entries = parse_entry_bundle(bundle.content)
    listed = (await client.get("/v1/ledger/entries", params={"limit": 1000}, headers=operator_headers)).json()
    assert [e.decode() for e in entries] == [e["canonical"] for e in listed["items"]][:n]
    hashes = split_hash_tile(tile.content, n)
    assert hashes == [leaf_hash(e) for e in entries]
    assert root_from_leaves(hashes) == unb64(cp["root_hash"])
    # What is not there yet, or is no tile at all, is a 404 with the error body.
    for path in (
        tile_path(0, 0, n + 1),
        tile_path(0, 0),
        tile_path("entries", 1, 1),
        tile_path(1, 0, 1),
        "tile/0/1",
        "tile/0/000.p/0",
        "tile/9/000.p/1",
        "tile/x/000",
        "tile/entries/x000/001",
    ):
        r = await client.get("/log/" + path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "tile_not_found", path


def test_a_bad_witness_configuration_stops_start_up(data_dir):
    from ledger.cosignature import generate_witness_key
    from service.core.settings import Settings

    _, vkey = generate_witness_key("bank.example/witness")
    log_vkey = "escrow.example/ledger+" + verifier_key("escrow.example/ledger", bytes(32)).split("+", 1)[1]
    cases = [
        ("[1]", 0, "vkey and url"),
        ('{"vkey": 1}', 0, "JSON list"),
        (orjson.dumps([{"vkey": vkey, "url": "http://w"}]).decode(), 2, "exceeds"),
        (orjson.dumps([{"vkey": log_vkey, "url": "http://w"}]).decode(), 1, "cosignature/v1"),
        (orjson.dumps([{"vkey": vkey[:-2] + "AA", "url": "http://w"}]).decode(), 1, "ESCROW_WITNESSES"),
    ]
    for text, quorum, words in cases:
        with pytest.raises(ValueError, match=words):
            witnessing.configured(Settings(data_dir=data_dir, witnesses=text, witness_quorum=quorum))
    assert len(witnessing.configured(Settings(data_dir=data_dir, witnesses=cases[2][0], witness_quorum=1))) == 1
