"""Every statement on the health tables (merchant_health, merchant_daily, merchant_consumer_days,
risk_policies, inspection_draws) and the reads a re-assessment makes of complaints and merchants: what
the routes read (a merchant's code, the public directory, policy versions, inspection draws) and what the
writer runs for each batch's re-assessment (raw SQL on the writer's connection, `tx.conn.raw`)."""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime

import orjson
from sqlalchemy import case, insert, select, text, update

from risk import Policy
from risk.counters import COUNTER_FIELDS
from service.db.models import InspectionDraw, MerchantDaily, MerchantHealth, RiskPolicy
from service.http.common import read_or_404
from service.merchants.repository import merchants_t

health_t = MerchantHealth.__table__
policies_t = RiskPolicy.__table__
draws_t = InspectionDraw.__table__
daily_t = MerchantDaily.__table__
COUNTERS = COUNTER_FIELDS  # the daily rows and the health row keep one column per counter
CODE_RANK = case((health_t.c.code == "green", 0), (health_t.c.code == "yellow", 1), else_=2)
LISTED = merchants_t.c.status.in_(("active", "closing"))  # the merchants the directory and the draws show


async def code_of(conn, merchant_id: str):
    """The merchant's health row, with its `delisted` flag."""
    stmt = (
        select(health_t, merchants_t.c.delisted)
        .join(merchants_t, merchants_t.c.id == health_t.c.merchant_id)
        .where(health_t.c.merchant_id == merchant_id)
    )
    return await read_or_404(conn, stmt, "No such merchant.", "merchant_not_found")


async def directory(conn, code: str | None, category: str | None, offset: int, limit: int) -> list:
    """Listed merchants, green first, then yellow, then red (in id order within a code)."""
    m = merchants_t
    stmt = (
        select(m.c.id, m.c.name, m.c.category, m.c.status, m.c.delisted, health_t.c.code, health_t.c.since)
        .join(health_t, health_t.c.merchant_id == m.c.id)
        .where(LISTED)
        .order_by(CODE_RANK, m.c.id)
        .offset(offset)
        .limit(limit)
    )
    if code:
        stmt = stmt.where(health_t.c.code == code)
    if category:
        stmt = stmt.where(m.c.category == category)
    return (await conn.execute(stmt)).all()


async def add_policy(tx, version: int, body: dict) -> None:
    await tx.conn.execute(
        insert(policies_t).values(version=version, body=orjson.dumps(body).decode(), created_at=tx.now)
    )


async def draw_population(conn) -> list[tuple[str, str]]:
    """(merchant id, code) of every listed merchant, in id order: what a draw draws from."""
    stmt = (
        select(health_t.c.merchant_id, health_t.c.code)
        .join(merchants_t, merchants_t.c.id == health_t.c.merchant_id)
        .where(LISTED)
        .order_by(health_t.c.merchant_id)
    )
    return [(r.merchant_id, r.code) for r in (await conn.execute(stmt)).all()]


async def add_draw(tx, draw_id: str, seed: str, body: dict) -> None:
    await tx.conn.execute(
        insert(draws_t).values(id=draw_id, seed=seed, body=orjson.dumps(body).decode(), created_at=tx.now)
    )


async def get_draw(conn, draw_id: str):
    return await read_or_404(conn, select(draws_t).where(draws_t.c.id == draw_id), "No such draw.", "draw_not_found")


_LATEST_POLICY = "SELECT body FROM risk_policies ORDER BY version DESC LIMIT 1"


async def latest_policy_body(conn) -> str | None:
    """The newest policy version's JSON body, or None before the first PUT. On the writer's connection
    through its raw cursor (no statement to compile; inside a quick run it rides with the queued writes)."""
    raw = getattr(conn, "raw", None)
    row = raw.one(_LATEST_POLICY) if raw is not None else (await conn.execute(text(_LATEST_POLICY))).first()
    return row[0] if row else None


# ---- the re-assessment (service/health/service.py), on the writer's connection ---------------------------

HEALTH_COLS = ("code", "red_since", "warning_published_at", "onboarded_day") + COUNTERS
HealthRow = namedtuple("HealthRow", HEALTH_COLS)


async def add_health(conn, values: dict) -> None:
    """A new merchant's health row."""
    await conn.execute(insert(health_t).values(**values))


async def change_health(conn, merchant_id: str, values: dict, added: dict[str, int]) -> None:
    """Set `values` on the merchant's health row and add `added` to its all-time counters."""
    values = {**values, **{c: health_t.c[c] + v for c, v in added.items() if v}}
    await conn.execute(update(health_t).where(health_t.c.merchant_id == merchant_id).values(**values))


async def restart_grace(conn, merchant_id: str, now: datetime) -> None:
    """A still-red merchant's grace period starts again now."""
    stmt = update(health_t).where(health_t.c.merchant_id == merchant_id, health_t.c.code == "red")
    await conn.execute(stmt.values(red_since=now))


async def set_delisted(conn, merchant_id: str) -> None:
    await conn.execute(update(merchants_t).where(merchants_t.c.id == merchant_id).values(delisted=True))


async def set_warned(conn, merchant_id: str, at: datetime | None) -> None:
    """When the merchant's red warning was published (None: lifted)."""
    await conn.execute(update(merchants_t).where(merchants_t.c.id == merchant_id).values(warned_at=at))


async def red_past_grace(conn, red_before: datetime, limit: int) -> list[str]:
    """Listed, active merchants red since before `red_before` (their grace is over)."""
    stmt = (
        select(health_t.c.merchant_id)
        .join(merchants_t, merchants_t.c.id == health_t.c.merchant_id)
        .where(
            health_t.c.code == "red",
            merchants_t.c.delisted.is_(False),
            merchants_t.c.status == "active",
            health_t.c.red_since <= red_before,
        )
        .limit(limit)
    )
    return [r.merchant_id for r in (await conn.execute(stmt)).all()]


def merchant_ids_after(raw, after: str, limit: int) -> list[str]:
    """The next `limit` merchants with a health row, in id order, after `after`."""
    sql = "SELECT merchant_id FROM merchant_health WHERE merchant_id > ? ORDER BY merchant_id LIMIT ?"
    return [r[0] for r in raw.all(sql, (after, limit))]


def state_value(raw, name: str) -> str | None:
    row = raw.one("SELECT value FROM app_state WHERE name = ?", (name,))
    return row[0] if row else None


def set_state_value(raw, name: str, value: str) -> None:
    raw.run(
        "INSERT INTO app_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def add_daily_counts(raw, rows: list[tuple]) -> None:
    """(merchant, day, counts in COUNTERS order) added to each merchant's row of that day."""
    raw.many(_DAILY_UPSERT, rows)


def add_consumer_days(raw, rows: list[tuple]) -> None:
    """(merchant, kind, day, consumer): a consumer refunded or rejected at a merchant on a day."""
    raw.many(_CONSUMER_DAY_INSERT, rows)


def keep_code(raw, rows: list[tuple]) -> None:
    """Re-assessments that kept the code: (indicators, reasons, policy version, new merchant, counts in
    COUNTERS order added to the all-time counters, merchant)."""
    raw.many(_HEALTH_SAME, rows)


def _ids(raw, merchant_ids: list[str]):
    return list(merchant_ids) if raw.is_pg else orjson.dumps(list(merchant_ids)).decode()


def long_states(
    raw, policy: Policy, merchant_ids: list[str], now, first_instant, window_start: int, recent_start: int, lowest: int
) -> list[tuple]:
    """Rows of `_state_sql` (see there) for the merchants: read from the tables, window sums included."""
    weeks = (policy.surge_weeks, recent_start)
    return raw.all(
        _state_sql_for(raw.is_pg, policy),
        (
            raw.t(now),
            raw.t(first_instant),
            window_start,
            window_start,
            *([window_start] * len(COUNTERS)),
            recent_start,
            recent_start,
            *weeks,
            recent_start,
            *weeks,
            lowest,
            _ids(raw, merchant_ids),
        ),
    )


def known_states(raw, policy: Policy, merchant_ids: list[str], now) -> list[tuple]:
    """Rows of `_known_sql` (see there) for the merchants: the stored row, the merchant, overdue complaints."""
    key = (raw.is_pg, policy.complaint_needs_card, policy.complaint_once_per_consumer)
    sql = _KNOWN_SQL.get(key)
    if sql is None:
        sql = _KNOWN_SQL[key] = _known_sql(raw.is_pg, policy)
    return raw.all(sql, (raw.t(now), _ids(raw, merchant_ids)))


# A consumer's first refund (or rejection) at a merchant on a day; later ones that day change nothing.
_CONSUMER_DAY_INSERT = (
    "INSERT INTO merchant_consumer_days (merchant_id, kind, day, consumer_id) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (merchant_id, kind, day, consumer_id) DO NOTHING"
)


# Today's counts of every merchant of a batch in one statement: a new row, or added to the row there.
_DAILY_UPSERT = (
    f"INSERT INTO merchant_daily (merchant_id, day, {', '.join(COUNTERS)}) VALUES (?, ?, {', '.join('?' * len(COUNTERS))}) "
    "ON CONFLICT (merchant_id, day) DO UPDATE SET "
    + ", ".join(f"{c} = merchant_daily.{c} + excluded.{c}" for c in COUNTERS)
)


def _complaint_filters(policy: Policy) -> tuple[str, str]:
    """(what to count, extra WHERE) for the complaints that count under the policy's defences."""
    what = "DISTINCT c.consumer_id" if policy.complaint_once_per_consumer else "*"
    where = " AND c.card_holder" if policy.complaint_needs_card else ""
    return what, where


def _state_sql(is_pg: bool, policy: Policy) -> str:
    """One statement for the state of many merchants: each one's health row and merchant state, its counted
    overdue complaints, counted complaints in the window, distinct refunding and rejecting consumers in the
    window, and its window sums (at most a window's worth of daily rows each).

    Parameters: now (overdue), the window's first instant (complaints), window start twice (refund and
    rejection consumers), window start (once per counter), recent start; recent start, the weeks pair
    (surge weeks, recent start) and recent start again for the prior weeks; the weeks pair; the lowest day
    to read; the merchant ids (a list on PostgreSQL, a JSON array on SQLite)."""
    least, greatest = ("LEAST", "GREATEST") if is_pg else ("MIN", "MAX")
    # Whole weeks the merchant sold before the last 7 days, at most the policy's surge weeks (risk.indicators).
    weeks = f"{greatest}(0, {least}(?, (? - h.onboarded_day + 1) / 7))"
    ids = "h.merchant_id = ANY(?)" if is_pg else "h.merchant_id IN (SELECT value FROM json_each(?))"
    what, holder = _complaint_filters(policy)
    kept = "" if policy.dismissed_complaints_count else " AND (c.resolution IS NULL OR c.resolution <> 'dismissed')"
    people = (
        "(SELECT COUNT(DISTINCT x.consumer_id) FROM merchant_consumer_days x WHERE x.merchant_id = h.merchant_id "
        "AND x.kind = '{}' AND x.day > ?)"
    )
    return (
        "SELECT h.merchant_id, " + ", ".join(f"h.{c}" for c in HEALTH_COLS) + ", m.delisted, m.status, "
        f"(SELECT COUNT({what}) FROM complaints c WHERE c.merchant_id = h.merchant_id AND c.status = 'open' "
        f"AND c.due_at <= ?{holder}), "
        f"(SELECT COUNT({what}) FROM complaints c WHERE c.merchant_id = h.merchant_id AND c.created_at >= ?{holder}{kept}), "
        + people.format("refund")
        + ", "
        + people.format("reject")
        + ", "
        + ", ".join(f"COALESCE(SUM(CASE WHEN d.day > ? THEN d.{c} ELSE 0 END), 0)" for c in COUNTERS)
        + ", COALESCE(SUM(CASE WHEN d.day > ? THEN d.issued ELSE 0 END), 0)"
        + f", COALESCE(SUM(CASE WHEN d.day > ? - 7 * {weeks} AND d.day <= ? THEN d.issued ELSE 0 END), 0)"
        + f", {weeks}, h.indicators, h.policy_version "
        "FROM merchant_health h JOIN merchants m ON m.id = h.merchant_id "
        "LEFT JOIN merchant_daily d ON d.merchant_id = h.merchant_id AND d.day > ? "
        f"WHERE {ids} GROUP BY h.merchant_id, m.id"
    )


_STATE_SQL: dict[tuple, str] = {}  # (is_pg, the policy's complaint switches) -> statement


def _state_sql_for(is_pg: bool, policy: Policy) -> str:
    key = (is_pg, policy.complaint_needs_card, policy.complaint_once_per_consumer, policy.dismissed_complaints_count)
    sql = _STATE_SQL.get(key)
    if sql is None:
        sql = _STATE_SQL[key] = _state_sql(is_pg, policy)
    return sql


def _known_sql(is_pg: bool, policy: Policy) -> str:
    """The row, the merchant's state and the counted overdue complaints now, of many merchants.
    Parameters: now, the merchant ids."""
    ids = "h.merchant_id = ANY(?)" if is_pg else "h.merchant_id IN (SELECT value FROM json_each(?))"
    what, holder = _complaint_filters(policy)
    return (
        "SELECT h.merchant_id, " + ", ".join(f"h.{c}" for c in HEALTH_COLS) + ", h.indicators, h.policy_version, "
        f"m.delisted, m.status, (SELECT COUNT({what}) FROM complaints c WHERE c.merchant_id = h.merchant_id "
        f"AND c.status = 'open' AND c.due_at <= ?{holder}) "
        f"FROM merchant_health h JOIN merchants m ON m.id = h.merchant_id WHERE {ids}"
    )


_KNOWN_SQL: dict[tuple, str] = {}


# The common case of a re-assessment: new figures, same code, counts added to the all-time counters.
_HEALTH_SAME = (
    "UPDATE merchant_health SET indicators = ?, reasons = ?, policy_version = ?, new_merchant = ?, "
    + ", ".join(f"{c} = {c} + ?" for c in COUNTERS)
    + " WHERE merchant_id = ?"
)
