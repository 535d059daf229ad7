"""Witness list and C2SP tlog-proof@v1 receipts (回执): `GET /v1/ledger/witnesses`, `.../entries/{seq}/receipt`.

A receipt is the entry (its canonical JSON in the proof's `extra` line), its RFC 9162 inclusion proof
and the cosigned checkpoint: anyone verifies it offline with the log's vkey, the witnesses' vkeys and a
quorum (`escrow ledger verify-receipt FILE ...`). By default the receipt uses the latest checkpoint
that holds the entry and has its quorum of cosignatures, else the latest that holds it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse

from ledger.checkpoint import verifier_key
from ledger.merkle import inclusion_proof, inclusion_proof_plan
from ledger.tlog_proof import build_tlog_proof
from service.http.context import AppContext, get_ctx
from service.http.errors import NotFound, Unprocessable, responses
from service.ledger_api import checkpoints, repository, witnessing
from service.ledger_api.schemas import TEXT, Witnesses

router = APIRouter(tags=["ledger"])


@router.get("/v1/ledger/witnesses", response_model=Witnesses)
async def list_witnesses(ctx: AppContext = Depends(get_ctx)):
    """The log's vkey, its witnesses (name and C2SP vkey) and the quorum a receipt's checkpoint needs."""
    return {
        "log": {"origin": ctx.keys.key_name, "vkey": verifier_key(ctx.keys.key_name, ctx.keys.public_key)},
        **witnessing.public_witnesses(ctx),
    }


async def choose_size(conn, ctx: AppContext, seq: int) -> int | None:
    """The latest checkpoint holding entry `seq` with its quorum of cosignatures, else the latest holding it."""
    ws = [w.vkey_text for w in witnessing._witnesses(ctx)]
    quorum = ctx.settings.witness_quorum
    if ws and quorum > 0:
        size = await repository.latest_witnessed_size(conn, seq, ws, quorum)
        if size is not None:
            return size
    return await repository.latest_checkpoint_size(conn, seq)


@router.get(
    "/v1/ledger/entries/{seq}/receipt",
    response_class=PlainTextResponse,
    responses={**responses(404, 422), 200: {"content": TEXT, "description": "c2sp.org/tlog-proof@v1"}},
)
async def get_receipt(
    seq: Annotated[int, Path(ge=0, le=2**62)],
    ctx: AppContext = Depends(get_ctx),
    tree_size: Annotated[int | None, Query(ge=1, le=2**62)] = None,
):
    """A C2SP tlog-proof@v1 receipt of entry `seq` against the checkpoint at `tree_size` (default: the
    latest witnessed checkpoint holding it)."""
    async with ctx.engines.reader.connect() as conn:
        entry = await repository.canonical(conn, seq)
        if entry is None:
            raise NotFound("No such ledger entry.", "entry_not_found")
        if tree_size is not None:
            if seq >= tree_size:
                raise Unprocessable(f"Entry {seq} is not in the tree of size {tree_size}.", "entry_not_in_tree")
            cp = await checkpoints.at_size(conn, tree_size)
            if cp is None:
                raise NotFound("No checkpoint was made at that tree size.", "checkpoint_not_found")
        else:
            n = await choose_size(conn, ctx, seq)
            cp = await checkpoints.at_size(conn, n) if n is not None else None
    if cp is None:  # the entry is newer than every checkpoint: make one now
        cp = await checkpoints.make_checkpoint(ctx)
    async with ctx.engines.reader.connect() as conn:
        cp = await witnessing.decorate(conn, ctx, cp)
    n = int(cp["tree_size"])
    _, _, nodes = await asyncio.to_thread(
        repository.read_for_proof, ctx.engines.sync_reader, lambda size, _cp: inclusion_proof_plan(seq, n)
    )
    text = build_tlog_proof(seq, inclusion_proof(seq, n, nodes), cp["note"], entry.encode("utf-8"))
    return PlainTextResponse(text, media_type="text/plain; charset=utf-8")
