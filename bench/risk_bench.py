"""Benchmark: recompute every merchant's health code from its daily counters.

    python bench/risk_bench.py [--merchants 100000] [--events 10000000] [--rows-per-merchant 20] [--db URL]

Bulk-generates `merchant_health` and `merchant_daily` rows directly (no HTTP, no ledger): each merchant
gets `rows-per-merchant` days of activity spread over the last 150 days, the events (cards sold,
redemptions asked and rejected, complaints) adding up to `--events`. Then it times what a policy change
or a test-clock move costs: one grouped query summing every merchant's window, last-7-days and prior-week
issuance (the same sums `service.health.service._state` makes per merchant), one for overdue
complaints, then `compute_indicators` + `classify` per merchant. Target: under 60 s.

Default database: a fresh SQLite file in a temporary folder. `--db postgresql://...` uses that
(the tables are created if missing and the two tables emptied first).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import case, create_engine, func, insert, select, text  # noqa: E402

from risk import DEFAULT_POLICY, MerchantCounters, classify, compute_indicators  # noqa: E402
from service.db.models import Complaint, MerchantDaily, MerchantHealth  # noqa: E402

COUNTERS = ("issued", "released", "refunded", "cards_sold", "redemptions_asked", "redemptions_rejected", "complaints")
daily_t, health_t, complaints_t = MerchantDaily.__table__, MerchantHealth.__table__, Complaint.__table__


def generate(engine, merchants: int, events: int, rows_per: int, today: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    per_row = max(1, events // (merchants * rows_per))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(daily_t.delete())
        conn.execute(health_t.delete())
        conn.execute(
            insert(health_t),
            [
                dict(
                    merchant_id=f"mch_{i:08d}",
                    code="green",
                    since=now,
                    red_since=None,
                    warning_published_at=None,
                    policy_version=1,
                    new_merchant=True,
                    indicators="{}",
                    reasons="[]",
                    onboarded_day=today - 200,
                    **dict.fromkeys(COUNTERS, 0),
                )
                for i in range(merchants)
            ],
        )
    total_events, batch = 0, []
    with engine.begin() as conn:
        for i in range(merchants):
            for day in rng.sample(range(today - 149, today + 1), rows_per):
                complaints = 1 if rng.random() < 0.02 else 0
                sold = rng.randint(0, per_row - complaints)
                asked = per_row - complaints - sold  # a rejection is the outcome of an ask, not another event
                rejected = rng.randint(0, asked // 4) if asked else 0
                issued = sold * 30_000
                released = asked * 2_000
                refunded = rng.choice((0, 0, 0, 30_000)) if sold else 0
                batch.append((f"mch_{i:08d}", day, issued, released, refunded, sold, asked, rejected, complaints))
                total_events += sold + asked + complaints
            if len(batch) >= 200_000:
                conn.execute(insert(daily_t), [dict(zip(("merchant_id", "day") + COUNTERS, r)) for r in batch])
                batch.clear()
        if batch:
            conn.execute(insert(daily_t), [dict(zip(("merchant_id", "day") + COUNTERS, r)) for r in batch])
    return total_events


def recompute_codes(engine, today: int, now: datetime, policy=DEFAULT_POLICY) -> Counter:
    """Every merchant's code from its daily rows: two grouped queries, then pure arithmetic."""
    d = daily_t.c
    window_start, recent_start = today - policy.window_days, today - 7
    in_window = d.day > window_start

    def wsum(col):
        return func.coalesce(func.sum(case((in_window, col), else_=0)), 0)

    sums = (
        [wsum(d[c]) for c in COUNTERS]
        + [func.sum(d[c]) for c in COUNTERS]
        + [func.coalesce(func.sum(case((d.day > recent_start, d.issued), else_=0)), 0)]
    )
    # prior issuance per number of prior weeks: the merchant's own onboarding bounds its weeks
    stmt = (
        select(
            d.merchant_id,
            health_t.c.onboarded_day,
            *sums,
            *[
                func.coalesce(
                    func.sum(case(((d.day > recent_start - 7 * w) & (d.day <= recent_start), d.issued), else_=0)), 0
                )
                for w in range(1, policy.surge_weeks + 1)
            ],
        )
        .join(health_t, health_t.c.merchant_id == d.merchant_id)
        .group_by(d.merchant_id, health_t.c.onboarded_day)
    )
    codes: Counter = Counter()
    with engine.connect() as conn:
        overdue = dict(
            conn.execute(
                select(complaints_t.c.merchant_id, func.count())
                .where(complaints_t.c.status == "open", complaints_t.c.due_at <= now)
                .group_by(complaints_t.c.merchant_id)
            ).all()
        )
        n = len(COUNTERS)
        for row in conn.execute(stmt).yield_per(20_000):
            vals = [int(v) for v in row[2:]]
            window = MerchantCounters(**dict(zip(COUNTERS, vals[:n])))
            all_time = MerchantCounters(**dict(zip(COUNTERS, vals[n : 2 * n])))
            weeks = max(0, min(policy.surge_weeks, (recent_start - row[1] + 1) // 7))
            prior = vals[2 * n + weeks] if weeks else 0
            ind = compute_indicators(
                window,
                all_time,
                vals[2 * n],
                prior,
                int(overdue.get(row[0], 0)),
                all_time.issued - all_time.released - all_time.refunded,
                prior_weeks=weeks,
            )
            codes[classify(ind, policy).code] += 1
    return codes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--merchants", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--rows-per-merchant", type=int, default=20)
    ap.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    args = ap.parse_args(argv)
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="risk-bench-")
        url = f"sqlite:///{tmp.name}/bench.db"
    else:
        url = args.db.replace("postgresql+asyncpg://", "postgresql+psycopg://") if "+asyncpg" in args.db else args.db
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.execute(text("PRAGMA journal_mode=WAL"))
            conn.execute(text("PRAGMA synchronous=OFF"))
    for t in (daily_t, health_t):
        t.create(engine, checkfirst=True)
    from service.db.models import metadata

    metadata.create_all(engine, tables=[complaints_t], checkfirst=True) if engine.dialect.name != "sqlite" else None
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:  # a stand-in complaints table (no foreign keys to fill)
            conn.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS complaints (id TEXT PRIMARY KEY, merchant_id TEXT, "
                    "status TEXT, due_at DATETIME)"
                )
            )
    now = datetime.now(UTC)
    today = (now - datetime(1970, 1, 1, tzinfo=UTC)).days
    t0 = time.perf_counter()
    events = generate(engine, args.merchants, args.events, args.rows_per_merchant, today)
    t1 = time.perf_counter()
    print(
        f"generated {args.merchants:,} merchants, {args.merchants * args.rows_per_merchant:,} daily rows, "
        f"{events:,} events in {t1 - t0:.1f}s ({engine.dialect.name})"
    )
    codes = recompute_codes(engine, today, now)
    t2 = time.perf_counter()
    print(
        f"recomputed {sum(codes.values()):,} health codes in {t2 - t1:.1f}s: "
        + ", ".join(f"{c} {codes[c]:,}" for c in ("green", "yellow", "red"))
        + f" — target < 60 s: {'OK' if t2 - t1 < 60 else 'MISSED'}"
    )
    engine.dispose()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
