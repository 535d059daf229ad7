"""Shared request/response pieces: field types, pagination, row helpers."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from service.http.context import AppContext, get_ctx
from service.http.errors import NotFound
from service.security.auth import Principal, require


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; refuse it on every database alike.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


Fen = Annotated[int, Field(strict=True, ge=1, le=10**12, description="Amount in fen (分, 1/100 yuan), an integer")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_no_nul)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(_no_nul)]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
After = Annotated[str | None, Query(max_length=64, description="Cursor: the next_cursor of the previous page")]


Ctx = Annotated[AppContext, Depends(get_ctx)]


def caller(*roles: str) -> Any:
    """The type of a route's `who` parameter: the authenticated caller, holding one of `roles`."""
    return Annotated[Principal, Depends(require(*roles))]


def answer(status: int, rule, *args):
    """The `op` of a write route whose answer is `status` and what `rule(tx, *args)` returns."""

    async def op(tx):
        return status, await rule(tx, *args)

    return op


async def read(ctx: AppContext, query, *args):
    """What `query(conn, *args)` returns, on a connection of the reader engine (reads skip the writer)."""
    async with ctx.engines.reader.connect() as conn:
        return await query(conn, *args)


async def read_or_404(conn, stmt, message: str, code: str):
    """The first row of `stmt`, or a 404 with `code` when there is none."""
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound(message, code)
    return row


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


def page(items: list[dict], limit: int, key: str = "id") -> dict:
    """`items` were fetched with limit + 1 rows: the extra row only says there is a next page."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": str(items[-1][key]) if more and items else None}


LONG_POLL_SECONDS = 0.5  # other replicas' rows are found by reading the table at least this often


async def long_poll(ctx, stmt, wait: float, signal) -> list:
    """Rows of `stmt`, read at once and, while there are none and `wait` seconds have not passed, again
    whenever `signal` (an in-process wake-up for this replica's writes) fires or every half second
    (other replicas' writes): the one long-poll of the alert feed, the event stream and the inbox."""
    deadline = time.monotonic() + wait
    while True:
        waiter = signal.event
        async with ctx.engines.reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        left = deadline - time.monotonic()
        if rows or left <= 0:
            return rows
        try:
            await asyncio.wait_for(waiter.wait(), timeout=min(left, LONG_POLL_SECONDS))
        except TimeoutError:
            pass
