"""Webhook endpoints (SPEC §9): register, list, read, delete, rotate the secret, the delivery log and
manual retry. Runs inside the writer's transaction; the dispatcher (dispatcher.py) sends."""

from __future__ import annotations

from datetime import timedelta

import orjson
from sqlalchemy import delete, func, insert, select, update

from service.core.clock import iso
from service.core.ids import new_id
from service.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.db.writer import Tx
from service.event_log.service import events_t, new_events
from service.http.common import page
from service.http.errors import Conflict, NotFound
from service.security.auth import Principal
from service.webhooks.signing import new_secret

endpoints_t = WebhookEndpoint.__table__
deliveries_t = WebhookDelivery.__table__
attempts_t = WebhookAttempt.__table__

OWNER_ROLES = ("merchant", "regulator", "auditor", "operator")
MAX_ENDPOINTS = 20  # per owner


def endpoint_out(e, secret: str | None = None) -> dict:
    out = {
        "id": e.id,
        "url": e.url,
        "event_types": orjson.loads(e.event_types),
        "status": e.status,
        "created_at": iso(e.created_at),
        "failing_since": iso(e.failing_since),
        "previous_secret_expires_at": iso(e.previous_secret_until) if e.previous_secret else None,
    }
    if secret is not None:
        out["secret"] = secret
    return out


def delivery_out(d, attempts: list) -> dict:
    return {
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.status == "pending" else None,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": iso(d.created_at),
        "delivered_at": iso(d.delivered_at),
        "attempt_log": [
            {
                "attempted_at": iso(a.attempted_at),
                "status_code": a.status_code,
                "duration_ms": a.duration_ms,
                "error": a.error,
            }
            for a in attempts
        ],
    }


async def _own(conn, who: Principal, endpoint_id: str):
    e = (await conn.execute(select(endpoints_t).where(endpoints_t.c.id == endpoint_id))).first()
    if e is None or e.owner_id != who.party_id or e.owner_role != who.role:
        raise NotFound("No such webhook endpoint.", "webhook_endpoint_not_found")
    return e


async def create(tx: Tx, who: Principal, url: str, event_types: list[str]) -> dict:
    conn = tx.conn
    count = (
        await conn.execute(
            select(func.count())
            .select_from(endpoints_t)
            .where(endpoints_t.c.owner_id == who.party_id, endpoints_t.c.owner_role == who.role)
        )
    ).scalar_one()
    if count >= MAX_ENDPOINTS:
        raise Conflict(f"At most {MAX_ENDPOINTS} webhook endpoints per party.", "too_many_endpoints")
    # From now on: events already committed are not sent (the writer's lock makes this read exact).
    cursor = (await conn.execute(select(func.coalesce(func.max(events_t.c.seq), 0)))).scalar_one()
    secret = new_secret()
    eid = new_id("we")
    await conn.execute(
        insert(endpoints_t).values(
            id=eid,
            owner_role=who.role,
            owner_id=who.party_id,
            url=url,
            event_types=orjson.dumps(event_types).decode(),
            status="enabled",
            secret=secret,
            cursor=int(cursor),
            created_at=tx.now,
        )
    )
    return endpoint_out(await _own(conn, who, eid), secret)


async def list_endpoints(conn, who: Principal, limit: int, after: str | None) -> dict:
    stmt = (
        select(endpoints_t)
        .where(endpoints_t.c.owner_id == who.party_id, endpoints_t.c.owner_role == who.role)
        .order_by(endpoints_t.c.id)
        .limit(limit + 1)
    )
    if after:
        stmt = stmt.where(endpoints_t.c.id > after)
    return page([endpoint_out(e) for e in (await conn.execute(stmt)).all()], limit)


async def read(conn, who: Principal, endpoint_id: str) -> dict:
    return endpoint_out(await _own(conn, who, endpoint_id))


async def remove(tx: Tx, who: Principal, endpoint_id: str) -> dict:
    e = await _own(tx.conn, who, endpoint_id)
    await tx.conn.execute(delete(attempts_t).where(attempts_t.c.endpoint_id == e.id))
    await tx.conn.execute(delete(deliveries_t).where(deliveries_t.c.endpoint_id == e.id))
    await tx.conn.execute(delete(endpoints_t).where(endpoints_t.c.id == e.id))
    return {"id": e.id, "deleted": True}


async def rotate_secret(tx: Tx, who: Principal, endpoint_id: str, grace_hours: float) -> dict:
    """A new secret; the old one goes on signing beside it for the grace period, so a receiver can
    switch without losing a delivery."""
    e = await _own(tx.conn, who, endpoint_id)
    secret = new_secret()
    await tx.conn.execute(
        update(endpoints_t)
        .where(endpoints_t.c.id == e.id)
        .values(secret=secret, previous_secret=e.secret, previous_secret_until=tx.now + timedelta(hours=grace_hours))
    )
    return endpoint_out(await _own(tx.conn, who, e.id), secret)


async def enable(tx: Tx, who: Principal, endpoint_id: str) -> dict:
    e = await _own(tx.conn, who, endpoint_id)
    await tx.conn.execute(
        update(endpoints_t).where(endpoints_t.c.id == e.id).values(status="enabled", failing_since=None)
    )
    return endpoint_out(await _own(tx.conn, who, e.id))


async def list_deliveries(conn, who: Principal, endpoint_id: str, limit: int, after: str | None) -> dict:
    e = await _own(conn, who, endpoint_id)
    stmt = select(deliveries_t).where(deliveries_t.c.endpoint_id == e.id).order_by(deliveries_t.c.id).limit(limit + 1)
    if after:
        stmt = stmt.where(deliveries_t.c.id > after)
    rows = (await conn.execute(stmt)).all()
    by_delivery: dict[str, list] = {}
    if rows:
        for a in (
            await conn.execute(
                select(attempts_t)
                .where(attempts_t.c.delivery_id.in_([d.id for d in rows]))
                .order_by(attempts_t.c.attempted_at, attempts_t.c.id)
            )
        ).all():
            by_delivery.setdefault(a.delivery_id, []).append(a)
    return page([delivery_out(d, by_delivery.get(d.id, [])) for d in rows], limit)


async def retry(tx: Tx, who: Principal, endpoint_id: str, delivery_id: str) -> dict:
    """Send a delivery again now, whatever its state (a receiver that lost it asks again)."""
    e = await _own(tx.conn, who, endpoint_id)
    d = (
        await tx.conn.execute(
            select(deliveries_t).where(deliveries_t.c.id == delivery_id, deliveries_t.c.endpoint_id == e.id)
        )
    ).first()
    if d is None:
        raise NotFound("No such delivery.", "delivery_not_found")
    if d.status == "pending" and d.claimed_until is not None and d.claimed_until > tx.now:
        raise Conflict("The delivery is being sent right now.", "delivery_in_flight")
    await tx.conn.execute(
        update(deliveries_t)
        .where(deliveries_t.c.id == d.id)
        .values(status="pending", next_attempt_at=tx.now, claimed_until=None)
    )
    tx.after_commit.append(new_events)  # wakes this replica's dispatcher
    d = (await tx.conn.execute(select(deliveries_t).where(deliveries_t.c.id == d.id))).first()
    return delivery_out(d, [])


async def prune(tx: Tx, retention_days: int, limit: int = 2000) -> int:
    """Sweeper: delivery records older than the events' retention go with them (pending ones too:
    their event is gone), attempts first."""
    cutoff = tx.now - timedelta(days=retention_days)
    ids = [
        r.id
        for r in (
            await tx.conn.execute(select(deliveries_t.c.id).where(deliveries_t.c.created_at < cutoff).limit(limit))
        ).all()
    ]
    if ids:
        await tx.conn.execute(delete(attempts_t).where(attempts_t.c.delivery_id.in_(ids)))
        await tx.conn.execute(delete(deliveries_t).where(deliveries_t.c.id.in_(ids)))
    return len(ids)
