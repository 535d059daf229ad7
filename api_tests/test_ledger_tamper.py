"""Tampering with the stored ledger is found and named (SPEC §4 `verify`), on the real test database.

The ledger is filled over HTTP, then rows of `ledger_entries` (and, for the forger, `merkle_nodes` and
`ledger_head`) are changed with raw SQL on the writer engine, and `verify_ledger` or the CLI is run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import delete, insert, select, update

from api_tests.conftest import OPERATOR_TOKEN, TEST_DB_URL, _recreate_pg_database
from api_tests.factories import (
    consistency_proof,
    create_auditor,
    inclusion_proof,
    ledger_entries,
    ledger_mix,
    new_checkpoint,
    redeem,
)
from ledger.canonical import canonical_json
from ledger.checkpoint import verify_checkpoint_json
from ledger.hashing import GENESIS_HEAD, chain_hash, leaf_hash, unb64
from ledger.merkle import Frontier, ProofError, root_from_leaves, verify_consistency, verify_inclusion
from ledger.verify import verify_chain
from service.app import build_context, create_app
from service.core.settings import Settings
from service.db.models import LedgerEntry, LedgerHead, MerkleNode
from service.ledger_api.service import verify_ledger
from service.ops import migrate

entries_t = LedgerEntry.__table__
head_t = LedgerHead.__table__
nodes_t = MerkleNode.__table__
ROOT = Path(__file__).resolve().parent.parent


async def _verify(ctx) -> dict:
    return await verify_ledger(ctx.engines.reader, public_key=ctx.keys.public_key)


async def _rows(engine) -> list:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(
                    entries_t.c.seq,
                    entries_t.c.kind,
                    entries_t.c.canonical,
                    entries_t.c.leaf_hash,
                    entries_t.c.chain_hash,
                ).order_by(entries_t.c.seq)
            )
        ).all()


async def _filled(client, ctx) -> tuple[dict, list, dict]:
    """A mixed ledger with a signed checkpoint at its end, verified intact first."""
    mix = await ledger_mix(client)
    cp = await new_checkpoint(client, await create_auditor(client))
    report = await _verify(ctx)
    assert report["ok"] is True and report["problems"] == [] and report["bad_seq"] is None, report
    assert report["size"] == cp["tree_size"] and report["checks"], report
    return mix, await _rows(ctx.engines.writer), cp


def _first(rows, kind: str, after: int = 3):
    return next(r for r in rows if r.kind == kind and r.seq > after)


async def test_changed_amount_is_named_by_seq(client, ctx):
    mix, rows, _ = await _filled(client, ctx)
    target = _first(rows, "release")
    body = orjson.loads(target.canonical)
    old = f'"amount":{body["amount"]}'
    assert target.canonical.count(old) == 1
    forged = target.canonical.replace(old, f'"amount":{body["amount"] + 1}')
    async with ctx.engines.writer.begin() as conn:
        await conn.execute(update(entries_t).where(entries_t.c.seq == target.seq).values(canonical=forged))
    report = await _verify(ctx)
    assert report["ok"] is False and report["bad_seq"] == target.seq, report
    assert "leaf hash" in report["reason"]

    # Recomputing that leaf hash too only moves the failure to the chain hash of the same entry.
    async with ctx.engines.writer.begin() as conn:
        await conn.execute(
            update(entries_t).where(entries_t.c.seq == target.seq).values(leaf_hash=leaf_hash(forged.encode()))
        )
    report = await _verify(ctx)
    assert report["ok"] is False and report["bad_seq"] == target.seq and "chain hash" in report["reason"], report


async def test_deleted_entry_is_named_by_the_gap(client, ctx):
    _, rows, _ = await _filled(client, ctx)
    gone = rows[len(rows) // 2].seq
    async with ctx.engines.writer.begin() as conn:
        await conn.execute(delete(entries_t).where(entries_t.c.seq == gone))
    report = await _verify(ctx)
    assert report["ok"] is False and report["bad_seq"] == gone, report
    assert "gap" in report["reason"]


async def test_deleted_last_entry_is_named(client, ctx):
    _, rows, _ = await _filled(client, ctx)
    last = rows[-1].seq
    async with ctx.engines.writer.begin() as conn:
        await conn.execute(delete(entries_t).where(entries_t.c.seq == last))
    report = await _verify(ctx)
    assert report["ok"] is False and report["bad_seq"] == last, report


async def test_swapped_entries_are_named_by_the_first(client, ctx):
    _, rows, _ = await _filled(client, ctx)
    i, j = rows[5], rows[11]
    async with ctx.engines.writer.begin() as conn:
        for dst, src in ((i, j), (j, i)):
            await conn.execute(
                update(entries_t)
                .where(entries_t.c.seq == dst.seq)
                .values(
                    canonical=src.canonical,
                    leaf_hash=bytes(src.leaf_hash),
                    chain_hash=bytes(src.chain_hash),
                    kind=src.kind,
                )
            )
    report = await _verify(ctx)
    assert report["ok"] is False and report["bad_seq"] == i.seq, report


async def test_forger_without_the_key_is_caught_by_the_signed_checkpoint(client, ctx):
    """A forger rewrites entry k < n0 (a non-money field, so every card sum still agrees) and then
    recomputes every later leaf and chain hash, every Merkle node and the ledger head.

    What this shows, precisely:
    1. The forged rows are internally consistent: `verify_chain` over them alone passes.
    2. `verify_ledger` fails, and only because the latest signed checkpoint (size n0, signed before the
       forgery) states a root and chain head that the rewritten rows no longer give; its signature
       still verifies, so the forger cannot re-sign it.
    3. The service, which signs whatever its database holds, now signs a checkpoint of size n1 over the
       forged tree (root R1' = root_from_leaves(forged leaves)). A client holding the old checkpoint asks
       the forged service for the consistency proof n0 → n1: `verify_consistency(n0, n1, signed R0, R1',
       proof)` refuses it. The honest proof n0 → n1 saved before the forgery also refuses R1' (while it
       accepts the honest R1), and the forged service's proof does verify against the forged tree's own
       size-n0 root, which differs from the signed R0: the forged history is not an extension of what was
       signed. The forged entry's inclusion proof at n0 is refused against the signed R0 as well.
    """
    mix, _, cp0 = await _filled(client, ctx)
    auditor = await create_auditor(client)
    n0 = cp0["tree_size"]
    # More honest activity after the signed checkpoint.
    await redeem(client, mix["gym"], mix["han"], mix["cards"]["d"], amount=1_200)
    honest = await ledger_entries(client, auditor)
    n1 = len(honest)
    assert n1 > n0 + 1
    honest_leaves = [unb64(e["leaf_hash"]) for e in honest]
    honest_root1 = root_from_leaves(honest_leaves)
    honest_proof = [unb64(h) for h in (await consistency_proof(client, n0, n1))["proof"]]
    verify_consistency(n0, n1, unb64(cp0["root_hash"]), honest_root1, honest_proof)

    # The forgery: entry k's payment method, then everything after it recomputed.
    rows = await _rows(ctx.engines.writer)
    k = next(r.seq for r in rows if r.kind == "purchase" and r.seq > 0)
    assert k < n0
    texts = [r.canonical for r in rows]
    body = orjson.loads(texts[k])
    body["payment_method"] = "alipay" if body["payment_method"] != "alipay" else "unionpay"
    texts[k] = canonical_json(body).decode()
    leaves, chains, head = [], [], GENESIS_HEAD
    frontier, node_rows = Frontier(), []
    for t in texts:
        leaf = leaf_hash(t.encode())
        head = chain_hash(head, leaf)
        leaves.append(leaf)
        chains.append(head)
        node_rows += [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in frontier.append(leaf)]
    async with ctx.engines.writer.begin() as conn:
        for seq in range(k, n1):
            await conn.execute(
                update(entries_t)
                .where(entries_t.c.seq == seq)
                .values(canonical=texts[seq], leaf_hash=leaves[seq], chain_hash=chains[seq])
            )
        await conn.execute(delete(nodes_t))
        await conn.execute(insert(nodes_t), node_rows)
        await conn.execute(update(head_t).where(head_t.c.id == 1).values(head=head))
    ctx.writer.forget_state()

    # 1. Internally consistent.
    forged_rows = [
        (r.seq, r.canonical, bytes(r.leaf_hash), bytes(r.chain_hash)) for r in await _rows(ctx.engines.writer)
    ]
    chain_report = verify_chain(forged_rows)
    assert chain_report.ok and chain_report.size == n1 and chain_report.head == head
    assert leaves[k] != honest_leaves[k] and leaves[:k] == honest_leaves[:k]

    # 2. verify_ledger: only the signed checkpoint disagrees.
    report = await _verify(ctx)
    assert report["ok"] is False, report
    assert report["problems"] == [report["reason"]], report
    assert f"checkpoint at size {n0}" in report["reason"] and "rewritten" in report["reason"], report
    assert report["checks"] and "signed by the platform key" in report["checks"][0]
    verify_checkpoint_json(cp0, ctx.keys.public_key)  # the old checkpoint itself is still genuine

    # 3. The forged tree cannot be proved an extension of the signed one.
    forged_root1 = root_from_leaves(leaves)
    assert forged_root1 != honest_root1
    cp1 = await new_checkpoint(client, auditor)  # the service signs what its database now holds
    assert cp1["tree_size"] == n1 and unb64(cp1["root_hash"]) == forged_root1
    verify_checkpoint_json(cp1, ctx.keys.public_key)
    forged_proof = [unb64(h) for h in (await consistency_proof(client, n0, n1))["proof"]]
    with pytest.raises(ProofError):
        verify_consistency(n0, n1, unb64(cp0["root_hash"]), forged_root1, forged_proof)
    with pytest.raises(ProofError):
        verify_consistency(n0, n1, unb64(cp0["root_hash"]), forged_root1, honest_proof)
    forged_root0 = root_from_leaves(leaves[:n0])
    assert forged_root0 != unb64(cp0["root_hash"])
    verify_consistency(n0, n1, forged_root0, forged_root1, forged_proof)  # a valid proof of the *forged* history
    p = await inclusion_proof(client, k, n0)
    assert unb64(p["leaf_hash"]) == leaves[k]
    with pytest.raises(ProofError):
        verify_inclusion(leaves[k], k, n0, [unb64(h) for h in p["proof"]], unb64(cp0["root_hash"]))


# ---------------------------------------------------------------- the CLI, on a database of its own


def _cli_database_url() -> str:
    if not TEST_DB_URL:
        return ""
    from sqlalchemy.engine import make_url

    u = make_url(TEST_DB_URL)
    return u.set(database=f"{u.database}_cli").render_as_string(hide_password=False)


def _run_cli(data_dir: Path, db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
    env.update(ESCROW_DATA_DIR=str(data_dir), ESCROW_DATABASE_URL=db_url)
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


async def test_cli_verify_exit_codes(client):
    with tempfile.TemporaryDirectory(prefix="escrow-cli-") as d:
        data_dir = Path(d)
        db_url = _cli_database_url()
        settings = Settings(
            env="test",
            data_dir=data_dir,
            database_url=db_url,
            operator_token=OPERATOR_TOKEN,
            background_tasks=False,
            sqlite_synchronous="NORMAL",
        )
        if db_url:
            await _recreate_pg_database(settings.effective_database_url)
        import asyncio

        await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
        other = build_context(settings)
        try:
            transport = httpx.ASGITransport(app=create_app(ctx=other), client=("10.8.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://escrow.test") as c2:
                mix = await ledger_mix(c2)
                await new_checkpoint(c2, mix["li"])
            ok = await asyncio.to_thread(_run_cli, data_dir, db_url, "ledger", "verify")
            assert ok.returncode == 0, ok.stdout + ok.stderr
            assert "ledger OK" in ok.stdout and "signed by the platform key" in ok.stdout

            rows = await _rows(other.engines.writer)
            target = _first(rows, "refund")
            body = orjson.loads(target.canonical)
            old = f'"amount":{body["amount"]}'
            async with other.engines.writer.begin() as conn:
                await conn.execute(
                    update(entries_t)
                    .where(entries_t.c.seq == target.seq)
                    .values(canonical=target.canonical.replace(old, f'"amount":{body["amount"] - 100}'))
                )
            bad = await asyncio.to_thread(_run_cli, data_dir, db_url, "ledger", "verify")
            assert bad.returncode == 1, bad.stdout + bad.stderr
            assert f"ledger FAILED at seq {target.seq}:" in bad.stdout, bad.stdout
        finally:
            await other.writer.stop()
            await other.engines.dispose()
