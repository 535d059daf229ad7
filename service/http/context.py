"""What a running app holds: settings, engines, the writer, the clock and the keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from service.core.clock import Clock
from service.core.settings import Settings
from service.db.engine import Engines
from service.db.writer import Writer
from service.security.keys import Keys


@dataclass
class AppContext:
    settings: Settings
    engines: Engines
    writer: Writer
    clock: Clock
    keys: Keys
    token_cache: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


async def get_ctx(request: Request) -> AppContext:  # async: a sync dependency would cost a thread hop
    return request.app.state.ctx
