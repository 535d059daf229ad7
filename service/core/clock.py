"""The one clock every rule reads. In `ESCROW_ENV=test` the operator may move it forward.

The offset lives in the database (`app_state`) so every replica reads the same time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncConnection

from service.system import repository  # the app_state table's statements

OFFSET_KEY = "clock_offset_us"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return _iso(dt)


def shown(row, fields: tuple[str, ...], times: frozenset[str] = frozenset()) -> dict:
    """A row's columns as the API shows them, in `fields`' order: values as stored, the `times` in ISO 8601."""
    return {f: iso(getattr(row, f)) if f in times else getattr(row, f) for f in fields}


@lru_cache(maxsize=1024)  # a write batch states its one `now` in every entry and answer
def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Clock:
    def __init__(self, movable: bool):
        self.movable = movable
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self.offset

    async def refresh(self, conn: AsyncConnection) -> None:
        if not self.movable:
            return
        value = await repository.get(conn, OFFSET_KEY)
        self.offset = timedelta(microseconds=int(value)) if value is not None else timedelta(0)
