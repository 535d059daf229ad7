"""Parties the operator creates with a name and a key: regulators, auditors and lenders."""

from __future__ import annotations

from typing import NamedTuple

from service.core.ids import new_id, new_token
from service.db.models import Auditor, Lender, Regulator
from service.db.writer import Tx
from service.keys_api import repository as keys
from service.parties import repository


class Kind(NamedTuple):
    table: object
    id_prefix: str
    key_prefix: str
    role: str


REGULATOR = Kind(Regulator.__table__, "reg", "rg", "regulator")
AUDITOR = Kind(Auditor.__table__, "aud", "au", "auditor")
LENDER = Kind(Lender.__table__, "lnd", "ln", "lender")


async def create(tx: Tx, kind: Kind, name: str) -> dict:
    """The party and its first key; the answer carries the key this once."""
    party_id = new_id(kind.id_prefix)
    token = new_token(kind.key_prefix)
    await repository.add(tx, kind.table, party_id, name)
    await keys.issue(tx, token, kind.role, party_id)
    return {"id": party_id, "name": name, "role": kind.role, "api_key": token}
