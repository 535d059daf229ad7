"""Statements the health routes run: a merchant's code, the public directory, policy versions and
inspection draws."""

from __future__ import annotations

import orjson
from sqlalchemy import case, insert, select

from service.db.models import InspectionDraw, Merchant, MerchantHealth, RiskPolicy
from service.http.common import read_or_404

merchants_t = Merchant.__table__
health_t = MerchantHealth.__table__
policies_t = RiskPolicy.__table__
draws_t = InspectionDraw.__table__
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
