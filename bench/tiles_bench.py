"""Tiles, receipts and the monitor at 1,000,000 entries (SPEC §11).

    python bench/tiles_bench.py [--entries 1000000] [--database-url postgresql://...] [--requests 300]

Fills a ledger exactly as bench/ledger_bench.py does (its build and bulk-insert code), serves it with
`uvicorn service.main:app` (background tasks off), then measures over HTTP, one keep-alive client:
- tile fetch: random full level-0 hash tiles (8 KiB), level-1 hash tiles and entry bundles;
- receipt build: `GET /v1/ledger/entries/{seq}/receipt` for random seq (tlog-proof@v1, checked offline);
- monitor catch-up: `ledger.monitor.Monitor` from an empty state to the checkpoint, entries/s
  (fetch every entry bundle and level-0 tile, hash, check the money rules, compare the root).
Figures depend on the machine and its load: quote them with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.ledger_bench import build, env_for, free_port, insert_postgres, insert_sqlite, recreate_pg  # noqa: E402
from ledger.checkpoint import Checkpoint, sign_checkpoint, to_json, verifier_key  # noqa: E402
from ledger.monitor import Monitor  # noqa: E402
from ledger.tiles import TILE_WIDTH, tile_path  # noqa: E402
from ledger.tlog_proof import verify_tlog_proof  # noqa: E402


def med(samples: list[float]) -> str:
    s = sorted(samples)
    return (
        f"median {statistics.median(s) * 1e3:.2f} ms, p99 {s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3:.2f} ms"
        f" ({len(s)} requests)"
    )


def timed_gets(http: httpx.Client, paths: list[str]) -> list[float]:
    out = []
    for p in paths:
        t = time.perf_counter()
        r = http.get(p)
        out.append(time.perf_counter() - t)
        assert r.status_code == 200, (p, r.status_code, r.text[:200])
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    n, url = args.entries, args.database_url
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="tiles-bench-") as d:
        data_dir = Path(d)
        from service.core.settings import Settings
        from service.security.keys import load_keys

        settings = Settings(data_dir=data_dir, database_url=url, background_tasks=False)
        db_url = settings.effective_database_url
        print(f"database: {'SQLite' if settings.is_sqlite else 'PostgreSQL'}; {n:,} entries")
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
        signed = sign_checkpoint(Checkpoint(keys.key_name, n, root, head, "2025-06-02T00:00:00Z"), keys.signing_key)
        cpj = to_json(signed)
        cp = (n, root, head, cpj["timestamp"], cpj["note"], cpj["signature"], cpj["key_id"])
        if settings.is_sqlite:
            await asyncio.to_thread(insert_sqlite, data_dir / "escrow.db", entries, nodes, head, totals, cards, cp)
        else:
            await insert_postgres(db_url, entries, nodes, head, totals, cards, cp)
        del entries, nodes
        print(f"filled in {time.perf_counter() - t:.1f} s")
        log_vkey = verifier_key(keys.key_name, keys.public_key)

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
            env=env_for(data_dir, url, ESCROW_BACKGROUND_TASKS="false", ESCROW_ENV="test"),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=60) as http:
                for _ in range(600):
                    try:
                        if http.get("/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)
                full0 = n // TILE_WIDTH
                full1 = n // TILE_WIDTH // TILE_WIDTH
                for name, paths in (
                    (
                        "level-0 hash tile (full, 8 KiB)",
                        [f"/log/{tile_path(0, rng.randrange(full0))}" for _ in range(args.requests)],
                    ),
                    (
                        "level-1 hash tile (full)" if full1 else "level-1 hash tile (partial)",
                        [
                            f"/log/{tile_path(1, rng.randrange(full1)) if full1 else tile_path(1, 0, full0)}"
                            for _ in range(args.requests)
                        ],
                    ),
                    (
                        "entry bundle (full, 256 entries)",
                        [f"/log/{tile_path('entries', rng.randrange(full0))}" for _ in range(args.requests)],
                    ),
                ):
                    timed_gets(http, paths[:20])  # warm
                    print(f"tile fetch, {name}: {med(timed_gets(http, paths))}")
                seqs = [rng.randrange(n) for _ in range(args.requests)]
                samples = []
                for seq in seqs:
                    t0 = time.perf_counter()
                    r = http.get(f"/v1/ledger/entries/{seq}/receipt")
                    samples.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                    verify_tlog_proof(r.text, log_vkey)
                print(f"receipt (tlog-proof@v1) build over HTTP: {med(samples)}")

            t0 = time.perf_counter()
            report = Monitor(base, log_vkey).run()
            el = time.perf_counter() - t0
            assert report["ok"] and report["size"] == n, report
            print(
                f"monitor catch-up from empty state: {n:,} entries in {el:.1f} s = {n / el:,.0f} entries/s "
                f"({report['cards']:,} cards, {report['open_holds']:,} open holds at the end)"
            )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
