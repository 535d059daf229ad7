"""Ledger endpoints (SPEC §6): checkpoints, the public key, entries, RFC 9162 proofs, reconciliation."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from ledger.checkpoint import public_key_json
from ledger.hashing import b64
from ledger.merkle import consistency_proof, consistency_proof_plan, inclusion_proof, inclusion_proof_plan
from service.core.clock import iso
from service.http.common import page
from service.http.context import AppContext, get_ctx
from service.http.errors import NotFound, Unprocessable, responses
from service.ledger_api import checkpoints, repository, witnessing
from service.ledger_api.schemas import (
    ConsistencyProof,
    InclusionProof,
    LedgerEntry,
    LedgerEntryPage,
    PublicKey,
    Reconciliation,
    SignedCheckpoint,
)
from service.security.auth import Principal, require

router = APIRouter(tags=["ledger"])


def entry_out(e) -> dict:
    return {
        "seq": int(e.seq),
        "kind": e.kind,
        "time": iso(e.time),
        "canonical": e.canonical,
        "leaf_hash": b64(bytes(e.leaf_hash)),
        "chain_hash": b64(bytes(e.chain_hash)),
    }


@router.get("/v1/ledger/checkpoint", response_model=SignedCheckpoint, responses=responses(404, 422))
async def get_checkpoint(
    ctx: AppContext = Depends(get_ctx), tree_size: Annotated[int | None, Query(ge=0, le=2**62)] = None
):
    """The latest signed checkpoint (or the one at `tree_size`), as JSON with the C2SP signed note."""
    async with ctx.engines.reader.connect() as conn:
        cp = await (checkpoints.at_size(conn, tree_size) if tree_size is not None else checkpoints.latest(conn))
    if cp is None:
        if tree_size is not None:
            raise NotFound("No checkpoint was made at that tree size.", "checkpoint_not_found")
        cp = await checkpoints.make_checkpoint(ctx)
    async with ctx.engines.reader.connect() as conn:
        return await witnessing.decorate(conn, ctx, cp)


@router.post("/v1/ledger/checkpoints", status_code=201, response_model=SignedCheckpoint, responses=responses(401, 403))
async def create_checkpoint(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("operator", "auditor", "regulator", "merchant", "consumer")),
):
    """Make a checkpoint of the ledger as it is now (or return the one at the current size)."""
    cp = await checkpoints.make_checkpoint(ctx)
    async with ctx.engines.reader.connect() as conn:
        return await witnessing.decorate(conn, ctx, cp)


@router.get("/v1/ledger/public-key", response_model=PublicKey)
async def get_public_key(ctx: AppContext = Depends(get_ctx)):
    """The platform's Ed25519 key: raw (base64), key id, and the C2SP verifier key string."""
    return public_key_json(ctx.keys.key_name, ctx.keys.public_key)


@router.get("/v1/ledger/entries", response_model=LedgerEntryPage, responses=responses(401, 403, 422))
async def list_entries(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("auditor", "regulator", "operator", "merchant", "consumer")),
    after: Annotated[int | None, Query(ge=-1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    """Entries in sequence order: all for auditors and regulators, a party's own for merchants and consumers."""
    async with ctx.engines.reader.connect() as conn:
        rows = await repository.entries_page(conn, who.role, who.party_id, after, limit)
    return page([entry_out(r) for r in rows], limit, key="seq")


@router.get("/v1/ledger/entries/{seq}", response_model=LedgerEntry, responses=responses(401, 403, 404, 422))
async def get_entry(
    seq: Annotated[int, Path(ge=0, le=2**62)],
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("auditor", "regulator", "operator", "merchant", "consumer")),
):
    async with ctx.engines.reader.connect() as conn:
        row = await repository.entry(conn, seq, who.role, who.party_id)
    if row is None:
        raise NotFound("No such ledger entry.", "entry_not_found")
    return entry_out(row)


@router.get("/v1/ledger/entries/{seq}/proof", response_model=InclusionProof, responses=responses(404, 422))
async def get_inclusion_proof(
    seq: Annotated[int, Path(ge=0, le=2**62)],
    ctx: AppContext = Depends(get_ctx),
    tree_size: Annotated[int | None, Query(ge=1, le=2**62)] = None,
):
    """RFC 9162 inclusion proof of entry `seq` in the tree of `tree_size` (default: the latest checkpoint)."""
    chosen: dict = {}

    def plan(size: int, cp_size: int | None):
        n = tree_size if tree_size is not None else (cp_size if cp_size is not None else size)
        chosen["n"] = n
        if n > size or not 0 <= seq < n:
            return []
        return inclusion_proof_plan(seq, n) + [(0, seq)]

    size, _, nodes = await asyncio.to_thread(
        repository.read_for_proof, ctx.engines.sync_reader, plan, tree_size is None
    )
    n = chosen["n"]
    if n > size:
        raise Unprocessable(f"tree_size {n} is beyond the ledger's {size} entries.", "tree_size_too_large")
    if not 0 <= seq < n:
        raise NotFound(f"Entry {seq} is not in the tree of size {n}.", "entry_not_in_tree")
    proof = inclusion_proof(seq, n, nodes)
    return {"leaf_index": seq, "tree_size": n, "leaf_hash": b64(nodes[(0, seq)]), "proof": [b64(h) for h in proof]}


@router.get("/v1/ledger/consistency", response_model=ConsistencyProof, responses=responses(422))
async def get_consistency_proof(
    first: Annotated[int, Query(ge=1, le=2**62)],
    second: Annotated[int, Query(ge=1, le=2**62)],
    ctx: AppContext = Depends(get_ctx),
):
    """RFC 9162 consistency proof between two tree sizes."""
    if first > second:
        raise Unprocessable("first must not exceed second.", "invalid_range")
    size, _, nodes = await asyncio.to_thread(
        repository.read_for_proof,
        ctx.engines.sync_reader,
        lambda size, _cp: consistency_proof_plan(first, second) if second <= size else [],
    )
    if second > size:
        raise Unprocessable(f"second {second} is beyond the ledger's {size} entries.", "tree_size_too_large")
    proof = consistency_proof(first, second, nodes)
    return {"first": first, "second": second, "proof": [b64(h) for h in proof]}


@router.get("/v1/escrow/reconciliation", response_model=Reconciliation, responses=responses(401, 403))
async def get_reconciliation(
    ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("auditor", "regulator", "operator"))
):
    """Totals by state from the card balances, the same sums as the ledger states them, and whether they agree."""
    async with ctx.engines.reader.connect() as conn:
        async with conn.begin():
            c = await repository.card_totals(conn)
            h = await repository.ledger_head(conn)
    balances = {
        "paid_in": int(c[0]),
        "escrow": int(c[1]),
        "held": int(c[2]),
        "released": int(c[3]),
        "refunded": int(c[4]),
    }
    ledger = {"paid_in": 0, "escrow": 0, "held": 0, "released": 0, "refunded": 0, "entries": 0}
    if h is not None:
        ledger = {
            "paid_in": int(h.paid_in),
            "released": int(h.released),
            "refunded": int(h.refunded),
            "held": int(h.held),
            "escrow": int(h.paid_in) - int(h.released) - int(h.refunded),
            "entries": int(h.size),
        }
    conserved = balances["paid_in"] == balances["escrow"] + balances["released"] + balances["refunded"]
    consistent = conserved and all(ledger[k] == balances[k] for k in balances)
    return {
        **balances,
        "currency": "CNY",
        "cards": int(c[5]),
        "ledger": ledger,
        "conserved": conserved,
        "consistent": consistent,
    }


# ---------------------------------------------------------------- witnesses, receipts, tiles (SPEC §11)

from service.ledger_api.receipts import router as _receipts_router  # noqa: E402
from service.ledger_api.tiles import router as _tiles_router  # noqa: E402

router.include_router(_receipts_router)
router.include_router(_tiles_router)
