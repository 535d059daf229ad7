"""Request and response models of the service endpoints and the test clock."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from service.http.common import Strict


class ClockMove(Strict):
    now: datetime


class Liveness(BaseModel):
    status: str


class Pong(BaseModel):
    ok: bool
    role: str


class ClockMoved(BaseModel):
    now: str
    swept: dict[str, int]
