"""Request and response models of the regulators, auditors and lenders the operator creates."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from service.cards.schemas import NulFree
from service.http.common import Name, Strict


class PartyCreate(Strict):
    name: Annotated[Name, NulFree]


class CreatedParty(BaseModel):
    id: str
    name: str
    role: str
    api_key: str = Field(description="The party's API key, shown this once")
