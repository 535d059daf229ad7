"""Webhook endpoints (SPEC §9): register, list, read, delete, rotate the secret, the delivery log and
manual retry. Runs inside the writer's transaction; the dispatcher (dispatcher.py) sends, and every
statement is in repository.py."""

from __future__ import annotations

from datetime import timedelta

import orjson

from service.core.clock import iso
from service.core.ids import new_id
from service.db.writer import Tx
from service.event_log import repository as event_repo
from service.event_log.service import new_events
from service.http.common import page
from service.http.errors import Conflict, NotFound
from service.security.auth import Principal
from service.webhooks import repository
from service.webhooks.signing import new_secret

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
    e = await repository.endpoint(conn, endpoint_id)
    if e is None or e.owner_id != who.party_id or e.owner_role != who.role:
        raise NotFound("No such webhook endpoint.", "webhook_endpoint_not_found")
    return e


async def create(tx: Tx, who: Principal, url: str, event_types: list[str]) -> dict:
    conn = tx.conn
    if await repository.count_owned(conn, who.role, who.party_id) >= MAX_ENDPOINTS:
        raise Conflict(f"At most {MAX_ENDPOINTS} webhook endpoints per party.", "too_many_endpoints")
    # From now on: events already committed are not sent (the writer's lock makes this read exact).
    cursor = await event_repo.newest_seq(conn)
    secret = new_secret()
    eid = new_id("we")
    await repository.add_endpoint(
        conn,
        id=eid,
        owner_role=who.role,
        owner_id=who.party_id,
        url=url,
        event_types=orjson.dumps(event_types).decode(),
        status="enabled",
        secret=secret,
        cursor=cursor,
        created_at=tx.now,
    )
    return endpoint_out(await _own(conn, who, eid), secret)


async def list_endpoints(conn, who: Principal, limit: int, after: str | None) -> dict:
    rows = await repository.owned(conn, who.role, who.party_id, limit, after)
    return page([endpoint_out(e) for e in rows], limit)


async def read(conn, who: Principal, endpoint_id: str) -> dict:
    return endpoint_out(await _own(conn, who, endpoint_id))


async def remove(tx: Tx, who: Principal, endpoint_id: str) -> dict:
    e = await _own(tx.conn, who, endpoint_id)
    await repository.remove_endpoint(tx.conn, e.id)
    return {"id": e.id, "deleted": True}


async def rotate_secret(tx: Tx, who: Principal, endpoint_id: str, grace_hours: float) -> dict:
    """A new secret; the old one goes on signing beside it for the grace period, so a receiver can
    switch without losing a delivery."""
    e = await _own(tx.conn, who, endpoint_id)
    secret = new_secret()
    await repository.set_endpoint(
        tx.conn,
        e.id,
        secret=secret,
        previous_secret=e.secret,
        previous_secret_until=tx.now + timedelta(hours=grace_hours),
    )
    return endpoint_out(await _own(tx.conn, who, e.id), secret)


async def enable(tx: Tx, who: Principal, endpoint_id: str) -> dict:
    e = await _own(tx.conn, who, endpoint_id)
    await repository.set_endpoint(tx.conn, e.id, status="enabled", failing_since=None)
    return endpoint_out(await _own(tx.conn, who, e.id))


async def list_deliveries(conn, who: Principal, endpoint_id: str, limit: int, after: str | None) -> dict:
    e = await _own(conn, who, endpoint_id)
    rows = await repository.deliveries_of(conn, e.id, limit, after)
    by_delivery: dict[str, list] = {}
    if rows:
        for a in await repository.attempts_of(conn, [d.id for d in rows]):
            by_delivery.setdefault(a.delivery_id, []).append(a)
    return page([delivery_out(d, by_delivery.get(d.id, [])) for d in rows], limit)


async def retry(tx: Tx, who: Principal, endpoint_id: str, delivery_id: str) -> dict:
    """Send a delivery again now, whatever its state (a receiver that lost it asks again)."""
    e = await _own(tx.conn, who, endpoint_id)
    d = await repository.delivery(tx.conn, delivery_id, e.id)
    if d is None:
        raise NotFound("No such delivery.", "delivery_not_found")
    if d.status == "pending" and d.claimed_until is not None and d.claimed_until > tx.now:
        raise Conflict("The delivery is being sent right now.", "delivery_in_flight")
    await repository.set_delivery(tx.conn, d.id, status="pending", next_attempt_at=tx.now, claimed_until=None)
    tx.after_commit.append(new_events)  # wakes this replica's dispatcher
    d = await repository.delivery(tx.conn, d.id)
    return delivery_out(d, [])


async def prune(tx: Tx, retention_days: int, limit: int = 2000) -> int:
    """Sweeper: delivery records older than the events' retention go with them (pending ones too:
    their event is gone), attempts first."""
    return await repository.prune(tx.conn, tx.now - timedelta(days=retention_days), limit)
