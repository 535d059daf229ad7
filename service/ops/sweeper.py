"""The sweeper: expires unanswered holds, refunds expired cards, closes merchants at their date, and
prunes idempotency keys past their 24-hour promise and rate-limit windows long over.

Runs in the service every few seconds and as the one-shot command `escrow sweep`. Work is done in
chunks, each chunk one write through the writer, so a large sweep never blocks requests for long.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from service.cards.refunds import refund_expired
from service.db.writer import Tx
from service.event_log.service import prune as prune_events
from service.health.service import sweep as health_sweep
from service.http.context import AppContext
from service.merchants.service import close_due
from service.redemptions.service import expire_overdue
from service.settlements.service import sweep_due as settle_due_days
from service.webhooks.service import prune as prune_deliveries

log = logging.getLogger("escrow.sweeper")


def _pruner(table: str, key: str, column: str, keep):
    """A sweep step deleting up to `limit` rows of `table` whose `column` is older than `keep(ctx)`, oldest
    first: a bounded statement per chunk, so a backlog never holds the writer for long."""
    sql = (
        f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {column} < ? ORDER BY {column} LIMIT ?)"
    )

    def step_for(ctx: AppContext):
        async def step(tx: Tx, limit: int) -> int:
            raw = tx.conn.raw
            return raw.run(sql, (raw.t(tx.now - keep(ctx)), limit))

        return step

    return step_for


# Idempotency keys: the SPEC promises a replay for 24 hours; kept `idempotency_keep_hours` (>= 24).
prune_idempotency = _pruner(
    "idempotency_keys", "caller, key", "created_at", lambda ctx: timedelta(hours=ctx.settings.idempotency_keep_hours)
)
# Rate-limit rows: a window long over counts nothing; kept `rate_limit_keep_seconds` after its start.
prune_rate_limits = _pruner(
    "rate_limits", "bucket", "window_start", lambda ctx: timedelta(seconds=ctx.settings.rate_limit_keep_seconds)
)


async def sweep_once(ctx: AppContext) -> dict:
    totals = {
        "holds_expired": 0,
        "cards_refunded": 0,
        "merchants_closed": 0,
        "health_reassessed": 0,
        "idempotency_keys_pruned": 0,
        "rate_limits_pruned": 0,
        "events_pruned": 0,
    }
    retention = ctx.settings.event_retention_days

    async def events_pruned(tx: Tx, chunk: int) -> int:
        return await prune_deliveries(tx, retention, chunk) + await prune_events(tx, retention, chunk)

    for name, step, chunk in (
        ("holds_expired", expire_overdue, 500),
        ("cards_refunded", refund_expired, 200),
        ("merchants_closed", close_due, 5),
        ("health_reassessed", health_sweep, 200),
        ("idempotency_keys_pruned", prune_idempotency(ctx), 1000),
        ("rate_limits_pruned", prune_rate_limits(ctx), 1000),
        ("events_pruned", events_pruned, 2000),
    ):
        while True:
            done = await ctx.writer.run(lambda tx, step=step, chunk=chunk: step(tx, chunk))
            totals[name] += done
            if done < chunk:
                break
    totals["days_settled"] = await settle_due_days(ctx)
    extra = ctx.extras.get("after_sweep")
    if extra:
        await extra(ctx)
    return totals


async def run_forever(ctx: AppContext) -> None:
    while True:
        await asyncio.sleep(ctx.settings.sweep_interval_seconds)
        try:
            totals = await sweep_once(ctx)
            if any(totals.values()):
                log.info("sweep: %s", totals)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sweep failed; will retry")
