"""Statements on the app_state table that the test clock writes."""

from __future__ import annotations

from sqlalchemy import delete, insert

from service.db.models import AppState

app_state_t = AppState.__table__


async def put(conn, name: str, value: str) -> None:
    await conn.execute(delete(app_state_t).where(app_state_t.c.name == name))
    await conn.execute(insert(app_state_t).values(name=name, value=value))
