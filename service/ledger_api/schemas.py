"""The ledger's answer models: checkpoints, the public key, entries, proofs, witnesses, reconciliation.

Hashes and signatures are base64 (standard alphabet); key ids are 8 hex digits (SPEC §7)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from service.cards.schemas import FenValue, Time
from service.http.common import Strict

Base64 = Annotated[str, Field(description="base64 (standard alphabet)")]


class Cosignature(Strict):
    name: str = Field(description="The witness's name, as in its key")
    vkey: str = Field(description="The witness's C2SP verifier key")
    timestamp: int = Field(description="When the witness cosigned, Unix seconds")


class SignedCheckpoint(Strict):
    origin: str = Field(description="The log's name, the signed note's first line")
    tree_size: int
    root_hash: Base64
    chain_head: Base64
    timestamp: Time
    note: str = Field(description="The C2SP signed note, with the witnesses' cosignature lines")
    signature: Base64
    key_id: str
    cosignatures: list[Cosignature]
    quorum: int
    witnessed: bool = Field(description="The checkpoint has its quorum of cosignatures")


class PublicKey(Strict):
    public_key: Base64 = Field(description="Raw Ed25519 public key")
    key_id: str
    verifier_key: str = Field(description="C2SP verifier key string")


class LedgerEntry(Strict):
    seq: int
    kind: str
    time: Time
    canonical: str = Field(description="The entry's canonical JSON, as hashed")
    leaf_hash: Base64
    chain_hash: Base64


class LedgerEntryPage(Strict):
    items: list[LedgerEntry]
    next_cursor: str | None = Field(description="The last seq of the page, while more follow")


class InclusionProof(Strict):
    leaf_index: int
    tree_size: int
    leaf_hash: Base64
    proof: list[Base64]


class ConsistencyProof(Strict):
    first: int
    second: int
    proof: list[Base64]


class LogKey(Strict):
    origin: str
    vkey: str


class Witness(Strict):
    name: str
    vkey: str


class Witnesses(Strict):
    log: LogKey
    witnesses: list[Witness]
    quorum: int


class LedgerTotals(Strict):
    paid_in: FenValue
    escrow: FenValue
    held: FenValue
    released: FenValue
    refunded: FenValue
    entries: int


class Reconciliation(Strict):
    paid_in: FenValue
    escrow: FenValue
    held: FenValue
    released: FenValue
    refunded: FenValue
    currency: str
    cards: int
    ledger: LedgerTotals
    conserved: bool = Field(description="paid_in = escrow + released + refunded over the card balances")
    consistent: bool = Field(description="Conserved, and the ledger states the same sums")


TEXT = {"text/plain": {"schema": {"type": "string"}}}
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
