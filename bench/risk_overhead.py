"""What the incremental health-code updates add to a confirmed redemption, measured A/B interleaved.

    python bench/risk_overhead.py [--rounds 6] [--duration 4] [--concurrency 256] [--merchants 64]

Two servers run side by side on fresh SQLite data folders, one with the incremental risk updates
(`ESCROW_RISK_INCREMENTAL=true`, as in production) and one without. The ask+confirm load of
bench/redemptions.py goes to one at a time, in short phases ordered on, off, off, on, on, off, ...
(ABBA), so the drift of a shared, noisy machine falls on both alike. Prints each phase's rate, the
totals, and the extra time per confirmed redemption (rate off ÷ rate on − 1). Then, for each server,
money is checked card by card and `ledger verify` must say OK; otherwise the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from redemptions import (  # noqa: E402
    BenchFailure,
    RawClient,
    check_money,
    ledger_verify,
    pairs_phase,
    process_tree,
    set_up,
    start_server,
    stop_server,
    wait_healthy,
)


class Side:
    def __init__(self, risk: bool, operator: str):
        self.risk = risk
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"escrow-risk-{'on' if risk else 'off'}-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
        self.env.update(
            {
                "ESCROW_DATA_DIR": str(self.data_dir),
                "ESCROW_ENV": "development",
                "ESCROW_OPERATOR_TOKEN": operator,
                "ESCROW_SQLITE_SYNCHRONOUS": "FULL",
                "ESCROW_REGISTRATION_LIMIT_PER_MINUTE": "1000000",
                "PYTHONUNBUFFERED": "1",
                "ESCROW_RISK_INCREMENTAL": "true" if risk else "false",
            }
        )
        self.server = None
        self.client = None
        self.cards = []
        self.mtoken = ""
        self.pairs = 0
        self.seconds = 0.0

    @property
    def name(self) -> str:
        return "risk on " if self.risk else "risk off"


async def run(args) -> int:
    operator = "op_bench_" + secrets.token_hex(20)
    sides = [Side(True, operator), Side(False, operator)]
    try:
        for s in sides:
            s.server = start_server(s.env, 1, s.data_dir / "server.log")
        for s in sides:
            await wait_healthy(s.server)
            s.client = RawClient("127.0.0.1", s.server.port, args.concurrency)
            s.mtoken, _, s.cards = await set_up(
                s.client, operator, args.concurrency, args.concurrency, 100_000, 333_333, args.merchants
            )
        print(
            f"two servers, {args.merchants} merchant(s) and {args.concurrency} cards each; "
            f"{args.rounds} rounds of {args.duration:g} s per side, ABBA order",
            flush=True,
        )
        order = []
        for r in range(args.rounds):
            order += [sides[0], sides[1]] if r % 2 == 0 else [sides[1], sides[0]]
        for i, s in enumerate(order):
            pids = process_tree(s.server.proc.pid)
            res = await pairs_phase(s.client, s.mtoken, s.cards, args.concurrency, args.warmup, args.duration, pids)
            if res.errors:
                raise BenchFailure(f"{s.name}: " + "; ".join(res.errors[:3]))
            s.pairs += res.count
            s.seconds += res.wall
            print(f"  phase {i + 1:2d}  {s.name}  {res.count / res.wall:8,.0f} confirmed redemptions/s", flush=True)
        for s in sides:
            await check_money(s.client, operator, s.cards)
            await s.client.close()
            s.client = None
            stop_server(s.server)
            line = ledger_verify(s.env)
            print(f"{s.name}: money conserved on {len(s.cards)} cards; {line[:60]}")
        on, off = (s.pairs / s.seconds for s in sides)
        print("-" * 78)
        print(f"risk on   {on:8,.0f} confirmed redemptions/s   ({sides[0].pairs:,} pairs in {sides[0].seconds:.1f} s)")
        print(f"risk off  {off:8,.0f} confirmed redemptions/s   ({sides[1].pairs:,} pairs in {sides[1].seconds:.1f} s)")
        print(f"the incremental health-code updates add {100 * (off / on - 1):.1f}% to a confirmed redemption's time")
        print("ledgers verify, money conserved")
        return 0
    except BenchFailure as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        for s in sides:
            if s.client is not None:
                await s.client.close()
            if s.server is not None:
                stop_server(s.server)
            shutil.rmtree(s.data_dir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6, help="rounds; each runs both sides once (default 6)")
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per phase (default 4)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each phase (default 1)")
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--merchants", type=int, default=64, help="merchants the cards are spread over (default 64)")
    args = p.parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
