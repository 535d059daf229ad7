"""Every statement on the webhook tables (endpoints, deliveries, attempts): the endpoints' routes, the
sweeper's pruning and the dispatcher's steps.

The rules are in service.py (who owns an endpoint, what a retry may do) and dispatcher.py (fan-out,
claims, the retry schedule, when an endpoint is disabled); this module only reads and writes rows,
in the three forms its callers need:

- Core, async: the routes (in the writer's transaction or on the reader) and the dispatcher's step on
  PostgreSQL (`lock`: `FOR UPDATE SKIP LOCKED`, so replicas share the work) or through the writer;
- selects the dispatcher runs on the reader it has (async, or sync in the SQLite companion);
- `lean_*`: plain SQL on a sqlite3 cursor, for the SQLite companion's step under BEGIN IMMEDIATE, as
  few and as plain statements as possible (the write lock is the money path's too). Times are bound as
  models.UTCDateTime's own text (`service/db/raw.py`'s memoised `sqlite_text`), as SQLAlchemy binds them.

The dispatcher's rows, in both forms of a step: a new delivery is (id, endpoint_id, event_seq,
event_id, event_type) (plus `claimed` in the lean step), a cursor (endpoint_id, cursor); results come
as `Outcomes` (attempt dicts; `b_`-keyed done and again rows, the names of the bound parameters).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import and_, bindparam, delete, func, insert, select, update

from service.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.db.raw import cached_from_sqlite_text, cached_sqlite_text
from service.event_log.repository import events_t, newest_seq_query

endpoints_t = WebhookEndpoint.__table__
deliveries_t = WebhookDelivery.__table__
attempts_t = WebhookAttempt.__table__


class Outcomes(NamedTuple):
    """What a step's finished sends make of the log (the dispatcher's `_outcomes`): attempt rows, the
    deliveries done, those again later (or given up), the endpoints whose last answer was good or bad."""

    attempts: list[dict]
    done: list[dict]
    again: list[dict]
    healthy: list[str]
    failing: list[str]


# -- endpoints ----------------------------------------------------------------------------------
async def endpoint(conn, endpoint_id: str):
    return (await conn.execute(select(endpoints_t).where(endpoints_t.c.id == endpoint_id))).first()


async def count_owned(conn, owner_role: str, owner_id: str) -> int:
    w = endpoints_t
    stmt = select(func.count()).select_from(w).where(w.c.owner_id == owner_id, w.c.owner_role == owner_role)
    return int((await conn.execute(stmt)).scalar_one())


async def add_endpoint(conn, **values) -> None:
    await conn.execute(insert(endpoints_t).values(**values))


async def owned(conn, owner_role: str, owner_id: str, limit: int, after: str | None) -> list:
    """The owner's endpoints by id after the cursor: `limit` rows and one more (there is a next page)."""
    w = endpoints_t
    stmt = select(w).where(w.c.owner_id == owner_id, w.c.owner_role == owner_role).order_by(w.c.id).limit(limit + 1)
    if after:
        stmt = stmt.where(w.c.id > after)
    return list((await conn.execute(stmt)).all())


async def set_endpoint(conn, endpoint_id: str, **values) -> None:
    await conn.execute(update(endpoints_t).where(endpoints_t.c.id == endpoint_id).values(**values))


async def remove_endpoint(conn, endpoint_id: str) -> None:
    """The endpoint with its deliveries and their attempts."""
    await conn.execute(delete(attempts_t).where(attempts_t.c.endpoint_id == endpoint_id))
    await conn.execute(delete(deliveries_t).where(deliveries_t.c.endpoint_id == endpoint_id))
    await conn.execute(delete(endpoints_t).where(endpoints_t.c.id == endpoint_id))


# -- the delivery log ---------------------------------------------------------------------------
async def deliveries_of(conn, endpoint_id: str, limit: int, after: str | None) -> list:
    """The endpoint's deliveries by id after the cursor: `limit` rows and one more."""
    d = deliveries_t
    stmt = select(d).where(d.c.endpoint_id == endpoint_id).order_by(d.c.id).limit(limit + 1)
    if after:
        stmt = stmt.where(d.c.id > after)
    return list((await conn.execute(stmt)).all())


async def attempts_of(conn, delivery_ids: list[str]) -> list:
    """The attempts of these deliveries, oldest first."""
    a = attempts_t
    stmt = select(a).where(a.c.delivery_id.in_(delivery_ids)).order_by(a.c.attempted_at, a.c.id)
    return list((await conn.execute(stmt)).all())


async def delivery(conn, delivery_id: str, endpoint_id: str | None = None):
    """One delivery (of that endpoint, when one is named)."""
    stmt = select(deliveries_t).where(deliveries_t.c.id == delivery_id)
    if endpoint_id is not None:
        stmt = stmt.where(deliveries_t.c.endpoint_id == endpoint_id)
    return (await conn.execute(stmt)).first()


async def set_delivery(conn, delivery_id: str, **values) -> None:
    await conn.execute(update(deliveries_t).where(deliveries_t.c.id == delivery_id).values(**values))


async def prune(conn, cutoff: datetime, limit: int) -> int:
    """Up to `limit` deliveries created before `cutoff`, attempts first; how many went."""
    ids = [
        r.id
        for r in (
            await conn.execute(select(deliveries_t.c.id).where(deliveries_t.c.created_at < cutoff).limit(limit))
        ).all()
    ]
    if ids:
        await conn.execute(delete(attempts_t).where(attempts_t.c.delivery_id.in_(ids)))
        await conn.execute(delete(deliveries_t).where(deliveries_t.c.id.in_(ids)))
    return len(ids)


# -- the dispatcher: what is due ----------------------------------------------------------------
def claimable(now: datetime):
    """A delivery some replica may take now: pending, due, and not held by a replica's unexpired claim."""
    d = deliveries_t
    return and_(
        d.c.status == "pending",
        d.c.next_attempt_at <= now,
        (d.c.claimed_until.is_(None)) | (d.c.claimed_until < now),
    )


def first_behind():
    """An enabled endpoint whose cursor is behind the newest event (a step has fan-out to do)."""
    w = endpoints_t
    return select(w.c.id).where(w.c.status == "enabled", w.c.cursor < newest_seq_query().scalar_subquery()).limit(1)


def first_due(now: datetime):
    """A due delivery of an enabled endpoint that nobody holds (a step has a claim to make)."""
    d, w = deliveries_t, endpoints_t
    return select(d.c.id).join(w, w.c.id == d.c.endpoint_id).where(claimable(now), w.c.status == "enabled").limit(1)


async def pending(conn) -> int:
    """Deliveries still to be sent to enabled endpoints, and enabled endpoints behind the newest event."""
    d, w = deliveries_t, endpoints_t
    waiting = (
        await conn.execute(
            select(func.count())
            .select_from(d.join(w, w.c.id == d.c.endpoint_id))
            .where(d.c.status == "pending", w.c.status == "enabled")
        )
    ).scalar_one()
    behind = (
        await conn.execute(
            select(func.count())
            .select_from(w)
            .where(w.c.status == "enabled", w.c.cursor < newest_seq_query().scalar_subquery())
        )
    ).scalar_one()
    return int(waiting) + int(behind)


# -- the dispatcher's step in Core (PostgreSQL, or SQLite through the writer) --------------------
async def enabled_cursors(conn, lock: bool) -> list:
    """The enabled endpoints, what fan-out needs of each (id, owner, event types, cursor)."""
    w = endpoints_t
    stmt = (
        select(w.c.id, w.c.owner_role, w.c.owner_id, w.c.event_types, w.c.cursor)
        .where(w.c.status == "enabled")
        .order_by(w.c.id)
    )
    if lock:
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await conn.execute(stmt)).all())


async def add_deliveries(conn, now: datetime, rows: list[tuple]) -> None:
    """New pending deliveries, due now: (id, endpoint_id, event_seq, event_id, event_type) each."""
    keys = ("id", "endpoint_id", "event_seq", "event_id", "event_type")
    fixed = {"status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
    await conn.execute(insert(deliveries_t), [dict(zip(keys, r, strict=True)) | fixed for r in rows])


async def set_cursors(conn, cursors: list[tuple[str, int]]) -> None:
    """Each endpoint's cursor moved on: (endpoint_id, cursor) each."""
    await conn.execute(
        update(endpoints_t).where(endpoints_t.c.id == bindparam("b_id")).values(cursor=bindparam("b_cursor")),
        [{"b_id": eid, "b_cursor": cursor} for eid, cursor in cursors],
    )


async def due_with_events(conn, now: datetime, full: set[str], limit: int, lock: bool) -> list:
    """Due deliveries of enabled endpoints (not of the `full` ones), oldest due first, with what their
    body and signature need: the event and the endpoint's URL and secrets."""
    d, e, w = deliveries_t, events_t, endpoints_t
    stmt = (
        select(
            d.c.id,
            d.c.endpoint_id,
            d.c.attempts,
            d.c.event_id,
            e.c.type,
            e.c.created_at,
            e.c.ledger_seq,
            e.c.data,
            w.c.url,
            w.c.secret,
            w.c.previous_secret,
            w.c.previous_secret_until,
        )
        .join(e, e.c.seq == d.c.event_seq)
        .join(w, w.c.id == d.c.endpoint_id)
        .where(claimable(now), w.c.status == "enabled")
        .order_by(d.c.next_attempt_at, d.c.id)
        .limit(limit)
    )
    if full:
        stmt = stmt.where(d.c.endpoint_id.not_in(sorted(full)))
    if lock:
        stmt = stmt.with_for_update(skip_locked=True, of=d)
    return list((await conn.execute(stmt)).all())


async def claim(conn, delivery_ids: list[str], until: datetime) -> None:
    d = deliveries_t
    await conn.execute(update(d).where(d.c.id.in_(delivery_ids)).values(claimed_until=until))


async def record(conn, now: datetime, out: Outcomes, disable_before: datetime) -> list[str]:
    """Each attempt into the log, each delivery done or rescheduled, each endpoint's failing time;
    returns the enabled endpoints among `out.failing` failing since `disable_before` or earlier."""
    d, w = deliveries_t, endpoints_t
    attempts, done, again, healthy, failing = out
    await conn.execute(
        insert(attempts_t),
        [
            {k: v for k, v in a.items() if k != "rest"}
            | dict(zip(("status_code", "duration_ms", "error"), a["rest"], strict=True))
            for a in attempts
        ],
    )
    if done:
        await conn.execute(
            update(d)
            .where(d.c.id == bindparam("b_id"))
            .values(
                status="delivered",
                attempts=bindparam("b_attempts"),
                last_status_code=bindparam("b_code"),
                last_error=None,
                delivered_at=bindparam("b_at"),
                claimed_until=None,
            ),
            done,
        )
    if again:
        await conn.execute(
            update(d)
            .where(d.c.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                attempts=bindparam("b_attempts"),
                last_status_code=bindparam("b_code"),
                last_error=bindparam("b_error"),
                next_attempt_at=bindparam("b_next"),
                claimed_until=None,
            ),
            again,
        )
    if healthy:
        await conn.execute(
            update(w).where(w.c.id.in_(healthy), w.c.failing_since.is_not(None)).values(failing_since=None)
        )
    if not failing:
        return []
    await conn.execute(update(w).where(w.c.id.in_(failing), w.c.failing_since.is_(None)).values(failing_since=now))
    rows = (
        await conn.execute(
            select(w.c.id).where(w.c.id.in_(failing), w.c.status == "enabled", w.c.failing_since <= disable_before)
        )
    ).all()
    return [r.id for r in rows]


# -- the SQLite companion's lean step: reads first (on the reader, outside the lock) ---------------
def enabled_endpoints():
    """The enabled endpoints, whole rows (fan-out and signing both need them)."""
    return select(endpoints_t).where(endpoints_t.c.status == "enabled")


def due_of(now: datetime, endpoint_ids: list[str], limit: int):
    """Due deliveries of these endpoints, oldest due first, with their event (for the body)."""
    d, e = deliveries_t, events_t
    return (
        select(d.c.id, d.c.endpoint_id, d.c.attempts, d.c.event_id, e.c.type, e.c.created_at)
        .add_columns(e.c.ledger_seq, e.c.data)
        .join(e, e.c.seq == d.c.event_seq)
        .where(claimable(now), d.c.endpoint_id.in_(endpoint_ids))
        .order_by(d.c.next_attempt_at, d.c.id)
        .limit(limit)
    )


# -- ... then the writes, under BEGIN IMMEDIATE on a sqlite3 cursor -----------------------------
def lean_enabled_cursors(cur) -> dict[str, int]:
    """The enabled endpoints' cursors as they are under the lock (another replica may have moved them)."""
    return dict(cur.execute("SELECT id, cursor FROM webhook_endpoints WHERE status = 'enabled'").fetchall())


def lean_add_deliveries(cur, now: datetime, until: datetime, rows: list[tuple]) -> None:
    """New pending deliveries, due now: (id, endpoint_id, event_seq, event_id, event_type, claimed) each;
    a claimed one is held by this replica until `until`."""
    at, held = cached_sqlite_text(now), cached_sqlite_text(until)
    cur.executemany(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_seq, event_id, event_type, status, "
        "attempts, next_attempt_at, claimed_until, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        [
            (i, eid, seq, ev_id, ev_type, at, held if claimed else None, at)
            for i, eid, seq, ev_id, ev_type, claimed in rows
        ],
    )


def lean_set_cursors(cur, cursors: list[tuple[str, int]]) -> None:
    """Each endpoint's cursor moved on: (endpoint_id, cursor) each."""
    cur.executemany("UPDATE webhook_endpoints SET cursor = ? WHERE id = ?", [(c, eid) for eid, c in cursors])


def lean_claim(cur, delivery_ids: list[str], now: datetime, until: datetime) -> set[str]:
    """Claim these deliveries until `until` where no other replica did meanwhile (still pending, no
    unexpired claim): the ids claimed."""
    t = cached_sqlite_text
    marks = ", ".join("?" * len(delivery_ids))
    return {
        x[0]
        for x in cur.execute(
            f"UPDATE webhook_deliveries SET claimed_until = ? WHERE id IN ({marks}) AND status = 'pending' "
            "AND (claimed_until IS NULL OR claimed_until < ?) RETURNING id",
            [t(until), *delivery_ids, t(now)],
        ).fetchall()
    }


def lean_unclaim(cur, delivery_ids: list[str]) -> None:
    cur.executemany("UPDATE webhook_deliveries SET claimed_until = NULL WHERE id = ?", [(i,) for i in delivery_ids])


def lean_record(cur, now: datetime, out: Outcomes, disable_before: datetime) -> list[str]:
    """`record` on the companion's cursor: the same rows, the same answer."""
    t = cached_sqlite_text
    attempts, done, again, healthy, failing = out
    cur.executemany(
        "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, attempted_at, status_code, duration_ms, "
        "error) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(a["id"], a["delivery_id"], a["endpoint_id"], t(a["attempted_at"]), *a["rest"]) for a in attempts],
    )
    if done:
        cur.executemany(
            "UPDATE webhook_deliveries SET status = 'delivered', attempts = ?, last_status_code = ?, "
            "last_error = NULL, delivered_at = ?, claimed_until = NULL WHERE id = ?",
            [(x["b_attempts"], x["b_code"], t(x["b_at"]), x["b_id"]) for x in done],
        )
    if again:
        cur.executemany(
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status_code = ?, last_error = ?, "
            "next_attempt_at = ?, claimed_until = NULL WHERE id = ?",
            [(x["b_status"], x["b_attempts"], x["b_code"], x["b_error"], t(x["b_next"]), x["b_id"]) for x in again],
        )
    for eid in healthy:
        cur.execute(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL", (eid,)
        )
    out = []
    for eid in failing:
        cur.execute(
            "UPDATE webhook_endpoints SET failing_since = ? WHERE id = ? AND failing_since IS NULL", (t(now), eid)
        )
        row = cur.execute(
            "SELECT failing_since FROM webhook_endpoints WHERE id = ? AND status = 'enabled'", (eid,)
        ).fetchone()
        if row is not None and cached_from_sqlite_text(row[0]) <= disable_before:
            out.append(eid)
    return out
