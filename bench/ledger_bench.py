"""Ledger benchmark: fill a ledger with N entries directly, then measure verify and proof serving.

    python bench/ledger_bench.py [--entries 1000000] [--database-url postgresql://...] [--requests 300]

1. Migrates a fresh database (`python -m service.cli migrate`, ESCROW_DATA_DIR = a temp dir; SQLite in
   that dir unless --database-url is given; a PostgreSQL database is dropped and recreated first).
2. Builds N canonical money entries in Python (purchase, hold, release, void over 10,000 cards), hashes
   them with the ledger library (leaf, chain, Frontier for the Merkle nodes) and bulk-inserts
   ledger_entries, merkle_nodes, ledger_head, matching card rows (foreign keys off: there are no
   merchants or products behind them) and one checkpoint signed with the data folder's key.
3. Measures: `verify_ledger` (chain + Merkle root + head + signed checkpoint, with and without the
   per-card sums) and the CLI `ledger verify`; inclusion and consistency proofs at size N with random
   arguments, in-process (plan + one synchronous read + assemble, as the endpoint does)
   and over HTTP against `uvicorn service.main:app` on that data folder (background tasks off).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger.canonical import canonical_json  # noqa: E402
from ledger.checkpoint import Checkpoint, sign_checkpoint, to_json  # noqa: E402
from ledger.hashing import GENESIS_HEAD, b64, chain_hash, leaf_hash, unb64  # noqa: E402
from ledger.merkle import (  # noqa: E402
    Frontier,
    consistency_proof,
    consistency_proof_plan,
    inclusion_proof,
    inclusion_proof_plan,
    root_at,
    root_plan,
    verify_consistency,
    verify_inclusion,
)
from service.db.models import Card, LedgerEntry, sqlite_text  # noqa: E402

CARDS = 10_000
PRICE = 100_000
T0 = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)


def env_for(data_dir: Path, url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
    env.update(ESCROW_DATA_DIR=str(data_dir), ESCROW_DATABASE_URL=url, **extra)
    return env


def build(n: int):
    """Entries, Merkle nodes, head, per-card sums and roots: all computed with the ledger library."""
    entries, nodes = [], []
    frontier = Frontier()
    head = GENESIS_HEAD
    # per card: [paid_in, released, refunded, held, pending_hold_amount, holds]
    cards: dict[int, list[int]] = {}
    totals = [0, 0, 0, 0]
    for seq in range(n):
        c = seq % CARDS
        card_id, merchant_id, consumer_id = f"card_{c:024d}", f"mer_{c % 97:025d}", f"con_{c:025d}"
        t = T0 + timedelta(microseconds=seq * 1_000)
        s = cards.get(c)
        if s is None:
            s = cards[c] = [PRICE, 0, 0, 0, 0, 0]
            kind, fields = (
                "purchase",
                {
                    "product_id": f"prd_{c % 97:025d}",
                    "amount": PRICE,
                    "currency": "CNY",
                    "payment_method": "wechat_pay",
                    "held_delta": 0,
                },
            )
            totals[0] += PRICE
        elif s[4] == 0:
            amount = 100 + seq % 7
            s[4] = amount
            s[5] += 1
            s[3] += amount
            totals[3] += amount
            kind, fields = (
                "hold",
                {"redemption_id": f"rdm_{seq:025d}", "units": amount, "amount": amount, "held_delta": amount},
            )
        else:
            amount, s[4] = s[4], 0
            s[3] -= amount
            totals[3] -= amount
            if s[5] % 7 == 0:
                kind, fields = (
                    "void",
                    {
                        "redemption_id": f"rdm_{seq - CARDS:025d}",
                        "units": amount,
                        "amount": amount,
                        "held_delta": -amount,
                        "reason": "rejected",
                    },
                )
            else:
                s[1] += amount
                totals[1] += amount
                kind, fields = (
                    "release",
                    {
                        "redemption_id": f"rdm_{seq - CARDS:025d}",
                        "units": amount,
                        "amount": amount,
                        "held_delta": -amount,
                        "currency": "CNY",
                    },
                )
        body = {
            "seq": seq,
            "time": t.isoformat().replace("+00:00", "Z"),
            "kind": kind,
            "card_id": card_id,
            "merchant_id": merchant_id,
            "consumer_id": consumer_id,
            **fields,
        }
        text = canonical_json(body)
        leaf = leaf_hash(text)
        head = chain_hash(head, leaf)
        entries.append((seq, kind, t, text.decode(), leaf, head, card_id, merchant_id, consumer_id))
        nodes.extend(frontier.append(leaf))
    return entries, nodes, head, frontier.root(), cards, totals


def card_rows(cards: dict[int, list[int]]):
    for c, (paid, released, refunded, held, _, _) in cards.items():
        yield (
            f"card_{c:024d}",
            f"prd_{c % 97:025d}",
            f"mer_{c % 97:025d}",
            f"con_{c:025d}",
            "stored_value",
            "active",
            paid,
            "CNY",
            1,
            PRICE,
            0,
            0,
            None,
            paid - released - refunded,
            held,
            released,
            refunded,
            "wechat_pay",
            f"wx-{c}",
            T0,
            T0 + timedelta(days=365),
            T0 + timedelta(days=7),
            None,
            None,
            c,
        )


CARD_COLS = tuple(Card.__table__.c.keys())  # the columns, in order, of service/db/models.py
ENTRY_COLS = tuple(LedgerEntry.__table__.c.keys())


def sqlite_time(t: datetime | None) -> str | None:
    return sqlite_text(t)  # what service.db.models.UTCDateTime stores on SQLite


def insert_sqlite(path: Path, entries, nodes, head, totals, cards, cp) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("PRAGMA synchronous=OFF")
    with db:
        db.executemany(
            f"INSERT INTO ledger_entries ({','.join(ENTRY_COLS)}) VALUES ({','.join('?' * 9)})",
            ((s, k, sqlite_time(t), c, lf, ch, a, b, d) for s, k, t, c, lf, ch, a, b, d in entries),
        )
        db.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
        db.execute(
            "INSERT INTO ledger_head (id, size, head, paid_in, released, refunded, held) VALUES (1, ?, ?, ?, ?, ?, ?)",
            (len(entries), head, *totals),
        )
        rows = [tuple(sqlite_time(v) if isinstance(v, datetime) else v for v in r) for r in card_rows(cards)]
        db.executemany(f"INSERT INTO cards ({','.join(CARD_COLS)}) VALUES ({','.join('?' * len(CARD_COLS))})", rows)
        db.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, chain_head, timestamp, note, signature, key_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            cp,
        )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("ANALYZE")
    db.close()


async def insert_postgres(url: str, entries, nodes, head, totals, cards, cp) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("SET session_replication_role = replica")  # no merchants/products behind the cards
        async with conn.transaction():
            await conn.copy_records_to_table("ledger_entries", records=entries, columns=ENTRY_COLS)
            await conn.copy_records_to_table("merkle_nodes", records=nodes, columns=("level", "idx", "hash"))
            await conn.execute(
                "INSERT INTO ledger_head (id, size, head, paid_in, released, refunded, held) "
                "VALUES (1, $1, $2, $3, $4, $5, $6)",
                len(entries),
                head,
                *totals,
            )
            await conn.copy_records_to_table("cards", records=list(card_rows(cards)), columns=CARD_COLS)
            await conn.execute(
                "INSERT INTO checkpoints (tree_size, root_hash, chain_head, timestamp, note, signature,"
                " key_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                *cp,
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def recreate_pg(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url.replace("postgresql+asyncpg", "postgresql"))
    admin = await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, database="postgres"
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{u.database}"')
    finally:
        await admin.close()


def ms(samples: list[float]) -> str:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return f"median {statistics.median(s) * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms ({len(s)} proofs)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--database-url", default="", help="PostgreSQL URL (dropped and recreated); default SQLite")
    ap.add_argument("--requests", type=int, default=300, help="proofs of each kind, in-process and over HTTP")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-dir", default="", help="use (and keep) this new, empty folder instead of a temp one")
    args = ap.parse_args()
    n, url = args.entries, args.database_url
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as d:
        data_dir = Path(args.data_dir or d)
        data_dir.mkdir(parents=True, exist_ok=True)
        from service.core.settings import Settings
        from service.security.keys import load_keys

        settings = Settings(data_dir=data_dir, database_url=url, background_tasks=False)
        db_url = settings.effective_database_url
        print(f"database: {'SQLite ' + str(data_dir / 'escrow.db') if settings.is_sqlite else url}")
        if not settings.is_sqlite:
            await recreate_pg(db_url)
        subprocess.run(
            [sys.executable, "-m", "service.cli", "migrate"],
            cwd=ROOT,
            env=env_for(data_dir, url),
            check=True,
            capture_output=True,
        )
        keys = load_keys(settings)

        t = time.perf_counter()
        entries, nodes, head, root, cards, totals = build(n)
        t_build = time.perf_counter() - t
        signed = sign_checkpoint(Checkpoint(keys.key_name, n, root, head, "2025-06-02T00:00:00Z"), keys.signing_key)
        cpj = to_json(signed)
        cp = (n, root, head, cpj["timestamp"], cpj["note"], cpj["signature"], cpj["key_id"])
        t = time.perf_counter()
        if settings.is_sqlite:
            await asyncio.to_thread(insert_sqlite, data_dir / "escrow.db", entries, nodes, head, totals, cards, cp)
        else:
            await insert_postgres(db_url, entries, nodes, head, totals, cards, cp)
        t_insert = time.perf_counter() - t
        avg = sum(len(e[3]) for e in entries) / n
        print(
            f"filled {n:,} entries (avg {avg:.0f} bytes), {len(nodes):,} Merkle nodes, {len(cards):,} cards: "
            f"build+hash {t_build:.1f} s ({n / t_build:,.0f} entries/s), insert {t_insert:.1f} s"
        )
        del entries, nodes

        from ledger.verify import ACCELERATED
        from service.app import build_context
        from service.ledger_api.repository import fetch_nodes, read_for_proof
        from service.ledger_api.service import verify_ledger

        print(
            "walk: "
            + (
                "C inner loop (ledger._walk, libcrypto SHA-256)"
                if ACCELERATED
                else "pure Python (ledger._walk not built)"
            )
        )
        ctx = build_context(settings)
        try:
            for check_sums in (False, True):
                t = time.perf_counter()
                rep = await verify_ledger(ctx.engines.reader, check_sums=check_sums, public_key=ctx.keys.public_key)
                el = time.perf_counter() - t
                assert rep["ok"] and rep["size"] == n and bytes.fromhex(rep["root_hash"]) == root, rep
                what = "chain+root+head+signed checkpoint" + (" + per-card sums" if check_sums else "")
                print(f"verify_ledger ({what}): {el:.2f} s = {n / el:,.0f} entries/s, ok={rep['ok']}")

            # In-process proofs: plan + one read on the synchronous reader + assemble, as the endpoint does.
            inc, con = [], []
            for _ in range(args.requests):
                seq = rng.randrange(n)
                t = time.perf_counter()
                _, _, got = read_for_proof(
                    ctx.engines.sync_reader, lambda size, _cp, seq=seq: inclusion_proof_plan(seq, n) + [(0, seq)]
                )
                proof = inclusion_proof(seq, n, got)
                inc.append(time.perf_counter() - t)
                verify_inclusion(got[(0, seq)], seq, n, proof, root)
            for _ in range(args.requests):
                first = rng.randrange(1, n)
                t = time.perf_counter()
                _, _, got = read_for_proof(
                    ctx.engines.sync_reader, lambda size, _cp, first=first: consistency_proof_plan(first, n)
                )
                proof = consistency_proof(first, n, got)
                con.append(time.perf_counter() - t)
                async with ctx.engines.reader.connect() as conn:  # not timed: check the proof
                    old_root = root_at(first, await fetch_nodes(conn, root_plan(first)))
                verify_consistency(first, n, old_root, root, proof)
            print(f"in-process inclusion proof at size {n:,}: {ms(inc)}")
            print(f"in-process consistency proof (random first, second={n:,}): {ms(con)}")
        finally:
            await ctx.engines.dispose()

        # The CLI, as an operator would run it (process start, migrate check, verify with sums).
        t = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "service.cli", "ledger", "verify"],
            cwd=ROOT,
            env=env_for(data_dir, url),
            capture_output=True,
            text=True,
        )
        el = time.perf_counter() - t
        print(
            f"CLI `ledger verify`: exit {cli.returncode} in {el:.2f} s wall = {n / el:,.0f} entries/s "
            f"({cli.stdout.splitlines()[0][:60] if cli.stdout else cli.stderr[-200:]}…)"
        )

        # Over HTTP, against the service on this data folder.
        import httpx

        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "service.main:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env_for(data_dir, url, ESCROW_BACKGROUND_TASKS="false"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                for _ in range(200):
                    try:
                        if http.get("/v1/ledger/public-key").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                else:
                    raise SystemExit(
                        f"server did not start: {server.stderr.read().decode()[-2000:] if server.stderr else ''}"
                    )
                for _ in range(20):  # warm up
                    http.get(f"/v1/ledger/entries/{rng.randrange(n)}/proof", params={"tree_size": n})
                inc, con = [], []
                for _ in range(args.requests):
                    seq = rng.randrange(n)
                    t = time.perf_counter()
                    r = http.get(f"/v1/ledger/entries/{seq}/proof", params={"tree_size": n})
                    inc.append(time.perf_counter() - t)
                    p = r.json()
                    verify_inclusion(unb64(p["leaf_hash"]), seq, n, [unb64(h) for h in p["proof"]], root)
                for _ in range(args.requests):
                    first = rng.randrange(1, n)
                    t = time.perf_counter()
                    r = http.get("/v1/ledger/consistency", params={"first": first, "second": n})
                    con.append(time.perf_counter() - t)
                    assert r.status_code == 200 and r.json()["proof"], r.text
                # Check a sample of consistency proofs against a root the server states for `first`.
                cp_now = http.get("/v1/ledger/checkpoint").json()
                assert cp_now["tree_size"] == n and cp_now["root_hash"] == b64(root)
                p = http.get("/v1/ledger/consistency", params={"first": n, "second": n}).json()
                verify_consistency(n, n, root, root, [unb64(h) for h in p["proof"]])
            print(f"HTTP inclusion proof at size {n:,}: {ms(inc)}")
            print(f"HTTP consistency proof (random first, second={n:,}): {ms(con)}")
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
