"""Backups: `escrow backup create` while the service takes traffic, `escrow backup restore` that verifies.

A real server is filled over HTTP; a backup is taken while clients keep buying, asking and
confirming; the backup is restored into a fresh data folder (and a fresh PostgreSQL database when
ESCROW_TEST_DATABASE_URL is set) and a server started on it shows exactly the ledger up to the
backup's tree size, every answered write below it, nothing after it, and verifies. A restore onto a
non-empty target is refused without --force. A tampered backup (a byte of a ledger entry flipped in
the SQLite copy, or an entry altered in the PostgreSQL data and dumped again) is refused, whether or
not the tamperer also fixed the manifest's checksums.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from api_tests.conftest import record
from api_tests.realserver import (
    ON_POSTGRES,
    OPERATOR_TOKEN,
    REPO,
    Database,
    Http,
    RealServer,
    all_entries,
    fresh_database,
    gather_limited,
    ledger_verify,
    new_auditor,
    new_consumer,
    new_count_product,
    new_merchant,
    new_stored_value_product,
    parsed,
    reconciliation_ok,
    server_env,
)


async def run_cli(env: dict, *args: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        *args,
        env=env,
        cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode()


def fix_manifest(folder: Path) -> None:
    """What a careful tamperer does: recompute the manifest's checksums."""
    m = json.loads((folder / "manifest.json").read_text())
    for name, info in m["files"].items():
        data = (folder / name).read_bytes()
        info["sha256"], info["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (folder / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True))


def flip_digit(text: str) -> str:
    """The same entry with one digit of its amount changed (same length: the SQLite record stays valid)."""
    i = text.index('"amount":') + len('"amount":')
    return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]


async def tamper_postgres(src: Path, dst: Path, seq: int) -> None:
    """Load the dump into a scratch database, alter one ledger entry there, dump it again into `dst`."""
    import psycopg

    from service.ops.backup import pg_tool

    scratch = await fresh_database("escrow_crash_scratch")
    try:
        url = scratch.url
        subprocess.run(
            [pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "--dbname", url, str(src / "escrow.dump")],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with psycopg.connect(url, autocommit=True) as conn:
            text = conn.execute("SELECT canonical FROM ledger_entries WHERE seq = %s", (seq,)).fetchone()[0]
            conn.execute("UPDATE ledger_entries SET canonical = %s WHERE seq = %s", (flip_digit(text), seq))
        (dst / "escrow.dump").unlink()
        subprocess.run(
            [pg_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(dst / "escrow.dump"), "--dbname", url],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        await scratch.drop()


async def pg_has_tables(db: Database) -> bool:
    import asyncpg

    conn = await asyncpg.connect(db.url, timeout=10)
    try:
        return await conn.fetchval("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") > 0
    finally:
        await conn.close()


async def test_online_backup_restore_verifies_and_tamper_is_refused(capsys):
    t0 = time.monotonic()
    dbs: list[Database] = []
    servers: list[RealServer] = []
    clients: list[Http] = []
    work = Path(tempfile.mkdtemp(prefix="escrow-backup-"))
    try:
        src_db = await fresh_database("escrow_crash_backup")
        dbs.append(src_db)
        source = RealServer(work / "source", src_db, "source")
        servers.append(source)
        source.migrate()
        await source.start()
        http = source.client(32)
        clients.append(http)

        # Fill over HTTP.
        auditor = (await new_auditor(http))["api_key"]
        merchant = await new_merchant(http, "Backup Spa 备份水疗")
        count = await new_count_product(http, merchant, price=12_345, uses=5)
        stored = await new_stored_value_product(http, merchant)
        consumers = await gather_limited(8, [new_consumer(http, i) for i in range(6)])
        answers: list[dict] = []  # every 2xx answer with a ledger_seq: (kind, seq, card_id, redemption_id)
        cards: dict[str, int] = {}  # card id -> purchase seq

        async def cycle(c: dict, i: int, product: dict) -> None:
            card = await http.expect(
                201,
                "POST",
                "/v1/cards",
                c["token"],
                {"product_id": product["id"], "payment": {"method": "unionpay", "reference": f"up-{i}-{c['id']}"}},
                key=f"bk-buy-{i}-{c['id']}",
            )
            cards[card["id"]] = card["ledger_seq"]
            answers.append({"kind": "purchase", "seq": card["ledger_seq"], "card_id": card["id"]})
            units = {"uses": 1} if product["type"] == "count" else {"amount": 12_000}
            h = await http.expect(
                201,
                "POST",
                f"/v1/cards/{card['id']}/redemptions",
                merchant["api_key"],
                units,
                key=f"bk-ask-{card['id']}",
            )
            answers.append({"kind": "hold", "seq": h["hold_ledger_seq"], "card_id": card["id"], "rdm": h["id"]})
            r = await http.expect(200, "POST", f"/v1/redemptions/{h['id']}/confirm", c["token"], key=f"bk-c-{h['id']}")
            answers.append({"kind": "release", "seq": r["ledger_seq"], "card_id": card["id"], "rdm": h["id"]})
            if i % 3 == 2:
                f = await http.expect(
                    200, "POST", f"/v1/cards/{card['id']}/refund", c["token"], key=f"bk-r-{card['id']}"
                )
                answers.append({"kind": "refund", "seq": f["ledger_seq"], "card_id": card["id"]})

        await asyncio.gather(*(cycle(c, i, count if i % 2 else stored) for i in range(3) for c in consumers))
        await http.expect(201, "POST", "/v1/ledger/checkpoints", auditor)

        # Back up while traffic continues.
        stop = asyncio.Event()

        async def traffic(c: dict, k: int) -> None:
            for i in range(10, 10_000):
                if stop.is_set():
                    return
                await cycle(c, i * 10 + k, count if i % 2 else stored)

        traffic_tasks = [asyncio.create_task(traffic(c, k)) for k, c in enumerate(consumers[:4])]
        await asyncio.sleep(0.3)
        size_before = len(answers)
        backup = work / "backup"
        code, out = await run_cli(source.env, "backup", "create", str(backup))
        assert code == 0, out
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*traffic_tasks), 60)
        assert len(answers) > size_before, "no traffic ran during the backup"
        manifest = json.loads((backup / "manifest.json").read_text())
        tree_size = manifest["tree_size"]
        assert manifest["database"] == ("postgresql" if ON_POSTGRES else "sqlite")
        assert "signing_key.pem" in manifest["keys"] and "phone.key" in manifest["keys"]
        for name, info in manifest["files"].items():
            assert hashlib.sha256((backup / name).read_bytes()).hexdigest() == info["sha256"]
        source_entries = await all_entries(http, auditor)
        assert 0 < tree_size < len(source_entries), (tree_size, len(source_entries))
        assert any(a["seq"] >= tree_size for a in answers), "every answer predates the backup"
        src_key = await http.expect(200, "GET", "/v1/ledger/public-key")
        source.stop()

        # Restore into a fresh folder / database, start a server on it.
        dst_db = await fresh_database("escrow_crash_restore")
        dbs.append(dst_db)
        restored = RealServer(work / "restored", dst_db, "restored")
        servers.append(restored)

        # Tampered copies, prepared while nothing else runs.
        victim = next(a for a in answers if a["kind"] == "release" and a["seq"] < tree_size)
        naive, careful = work / "tampered-naive", work / "tampered-careful"
        shutil.copytree(backup, naive)
        shutil.copytree(backup, careful)
        if ON_POSTGRES:
            await tamper_postgres(backup, naive, victim["seq"])
            shutil.copyfile(naive / "escrow.dump", careful / "escrow.dump")
        else:
            canonical = source_entries[victim["seq"]]["canonical"].encode()
            for folder in (naive, careful):
                data = (folder / "escrow.db").read_bytes()
                assert canonical in data
                (folder / "escrow.db").write_bytes(data.replace(canonical, flip_digit(canonical.decode()).encode()))
        fix_manifest(careful)
        t_dbs = [await fresh_database("escrow_crash_tamper") for _ in range(2)]
        dbs.extend(t_dbs)
        t_envs = [server_env(work / f"tamper-target-{i}", t_dbs[i]) for i in range(2)]

        results = await asyncio.gather(
            run_cli(restored.env, "backup", "restore", str(backup)),
            run_cli(t_envs[0], "backup", "restore", str(naive)),
            run_cli(t_envs[1], "backup", "restore", str(careful)),
        )
        code, out = results[0]
        assert code == 0 and "ledger OK" in out, out
        code, out = results[1]
        assert code != 0 and "does not match the SHA-256" in out, out
        code, out = results[2]
        assert code != 0 and "restore refused" in out and f"seq {victim['seq']}" in out, out
        refused_message = out.strip().splitlines()[-1]
        for i, _env in enumerate(t_envs):  # nothing servable was left behind
            if ON_POSTGRES:
                assert not await pg_has_tables(t_dbs[i])
            else:
                assert not (work / f"tamper-target-{i}" / "escrow.db").exists()

        await restored.start()
        rhttp = restored.client(32)
        clients.append(rhttp)
        entries = await all_entries(rhttp, auditor)
        assert len(entries) == tree_size
        assert entries == source_entries[:tree_size], "the restored ledger differs from the source's prefix"
        assert base64.b64decode(entries[-1]["chain_hash"]).hex() == manifest["chain_head"]
        assert await rhttp.expect(200, "GET", "/v1/ledger/public-key") == src_key
        by_seq = {e["seq"]: parsed(e) for e in entries}
        before = [a for a in answers if a["seq"] < tree_size]
        after = [a for a in answers if a["seq"] >= tree_size]

        async def visible(a: dict):
            e = by_seq[a["seq"]]
            assert e["kind"] == a["kind"] and e["card_id"] == a["card_id"], (a, e)
            got = await rhttp.expect(200, "GET", f"/v1/ledger/entries/{a['seq']}", auditor)
            assert got == entries[a["seq"]]
            if a.get("rdm"):
                r = await rhttp.expect(200, "GET", f"/v1/redemptions/{a['rdm']}", OPERATOR_TOKEN)
                assert a["kind"] != "release" or (r["status"] == "confirmed" and r["ledger_seq"] == a["seq"]), r

        async def card_visible(card_id: str, seq: int):
            got = await rhttp.request("GET", f"/v1/cards/{card_id}", OPERATOR_TOKEN)
            assert got.status == (200 if seq < tree_size else 404), (card_id, seq, tree_size, got.status)

        await gather_limited(16, [visible(a) for a in before] + [card_visible(c, s) for c, s in cards.items()])
        for a in after:
            assert (await rhttp.request("GET", f"/v1/ledger/entries/{a['seq']}", auditor)).status == 404
        await reconciliation_ok(rhttp, auditor)

        # A non-empty target is refused without --force (the restored server still running: nothing touched).
        code, out = await run_cli(restored.env, "backup", "restore", str(backup))
        assert code != 0 and "refusing to restore" in out and "--force" in out, out
        restored.stop()
        line = ledger_verify(restored.env)
        code, out = await run_cli(restored.env, "backup", "restore", "--force", str(backup))
        assert code == 0 and "ledger OK" in out, out
        record("backup restores", 2)
        record("tampered backups refused", 2)
        with capsys.disabled():
            print(
                f"\nbackup [{'PostgreSQL' if ON_POSTGRES else 'SQLite'}]: online backup at tree size {tree_size} of "
                f"{len(source_entries)} (traffic went on), restored: {len(before)} answered writes visible, "
                f"{len(after)} later ones absent; {line[:40]}…; tampered backup refused: {refused_message[:150]} "
                f"({time.monotonic() - t0:.0f} s)"
            )
    finally:
        for c in clients:
            await c.close()
        for s in servers:
            s.stop()
        for d in dbs:
            await d.drop()
        shutil.rmtree(work, ignore_errors=True)
