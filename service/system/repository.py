"""Statements on the app_state table: named values the service keeps (the test clock's offset, the auth epoch)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from service.db.models import AppState

app_state_t = AppState.__table__


async def put(conn, name: str, value: str) -> None:
    await conn.execute(delete(app_state_t).where(app_state_t.c.name == name))
    await conn.execute(insert(app_state_t).values(name=name, value=value))


async def get(conn, name: str) -> str | None:
    row = (await conn.execute(select(app_state_t.c.value).where(app_state_t.c.name == name))).first()
    return row[0] if row else None
