"""Signed checkpoints: tree size, root, chain head and time, signed with the platform's Ed25519 key.

A checkpoint is made inside a write batch (under the ledger-head lock), so its size, root and head
are one consistent state even with several replicas; `tree_size` is the primary key, so two
replicas can never publish two different checkpoints for one size.
"""

from __future__ import annotations

import asyncio
import logging

from ledger.checkpoint import Checkpoint as CheckpointData
from ledger.checkpoint import SignedCheckpoint, sign_checkpoint, to_json
from ledger.hashing import b64
from ledger.merkle import root_at, root_plan
from service.core.clock import iso
from service.db.writer import Tx
from service.event_log.service import emit
from service.http.context import AppContext
from service.ledger_api import repository

log = logging.getLogger("escrow.checkpoints")


def checkpoint_out(row) -> dict:
    return {
        "origin": row.origin if hasattr(row, "origin") else None,
        "tree_size": int(row.tree_size),
        "root_hash": b64(bytes(row.root_hash)),
        "chain_head": b64(bytes(row.chain_head)),
        "timestamp": row.timestamp,
        "note": row.note,
        "signature": row.signature,
        "key_id": row.key_id,
    }


async def latest(conn) -> dict | None:
    row = await repository.checkpoint_row(conn)
    return _out(row) if row else None


async def at_size(conn, size: int) -> dict | None:
    row = await repository.checkpoint_row(conn, size)
    return _out(row) if row else None


def _out(row) -> dict:
    origin = row.note.split("\n", 1)[0]
    d = checkpoint_out(row)
    d["origin"] = origin
    return d


def make_checkpoint_op(ctx: AppContext):
    async def op(tx: Tx) -> dict:
        conn = tx.conn
        head = await repository.ledger_head(conn)
        size, chain_head = int(head.size), bytes(head.head)
        existing = await at_size(conn, size)
        if existing:
            return existing
        root = root_at(size, await repository.fetch_nodes(conn, root_plan(size)))
        signed: SignedCheckpoint = sign_checkpoint(
            CheckpointData(
                origin=ctx.keys.key_name, tree_size=size, root_hash=root, chain_head=chain_head, timestamp=iso(tx.now)
            ),
            ctx.keys.signing_key,
        )
        d = to_json(signed)
        await repository.insert_checkpoint(
            conn,
            tree_size=size,
            root_hash=root,
            chain_head=chain_head,
            timestamp=d["timestamp"],
            note=d["note"],
            signature=d["signature"],
            key_id=d["key_id"],
        )
        emit(tx, "checkpoint.published", d)
        return d

    return op


async def make_checkpoint(ctx: AppContext) -> dict:
    return await ctx.writer.run(make_checkpoint_op(ctx))


async def run_forever(ctx: AppContext) -> None:
    """Checkpoint whenever new entries exist, every `checkpoint_interval_seconds`."""
    while True:
        await asyncio.sleep(ctx.settings.checkpoint_interval_seconds)
        try:
            async with ctx.engines.reader.connect() as conn:
                head = await repository.ledger_head(conn)
                last = await repository.latest_checkpoint_size(conn, -1)
            if head is not None and (last is None or int(head.size) > last):
                await make_checkpoint(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("checkpoint failed; will retry")
