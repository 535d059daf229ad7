"""The ledger as C2SP tlog-tiles under `/log/`: checkpoint, hash tiles and entry bundles.

A hash tile (L, N) is read from the stored perfect-subtree hashes: the nodes at tree level 8·L with
indexes N·256 … N·256+W−1, one primary-key range scan. An entry bundle is the canonical JSON of
entries N·256 … (each with a u16 length). A tile exists once the ledger holds all its leaves, so full
tiles never change and are served immutable; partial tiles and the checkpoint are cached briefly.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response

from ledger.tiles import TILE_HEIGHT, TILE_WIDTH, TileError, entry_bundle, hash_tile, parse_tile_path
from service.http.context import AppContext, get_ctx
from service.http.errors import NotFound, responses
from service.ledger_api import checkpoints, repository, witnessing
from service.ledger_api.receipts import choose_size
from service.ledger_api.schemas import BINARY, TEXT

router = APIRouter(prefix="/log", tags=["tiles"])
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=5"
MAX_LEVEL = 7  # 256^8 leaves would overflow a 63-bit size


def _parse(rest: str) -> tuple[int, int]:
    try:
        return parse_tile_path(rest)
    except TileError as exc:
        raise NotFound(f"No such tile: {exc}", "tile_not_found") from None


def _binary(data: bytes, width: int) -> Response:
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Cache-Control": IMMUTABLE if width == TILE_WIDTH else SHORT},
    )


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": TEXT, "description": "signed note"}},
)
async def get_log_checkpoint(ctx: AppContext = Depends(get_ctx)):
    """The latest checkpoint that has its quorum of cosignatures (else the latest), as a signed note with them.

    Tile readers are told of a tree only once the witnesses vouch for it: a monitor never has to race
    the witnessing round that follows each new checkpoint."""
    async with ctx.engines.reader.connect() as conn:
        size = await choose_size(conn, ctx, -1)
        cp = await checkpoints.at_size(conn, size) if size is not None else None
    if cp is None:
        cp = await checkpoints.make_checkpoint(ctx)
    async with ctx.engines.reader.connect() as conn:
        cp = await witnessing.decorate(conn, ctx, cp)
    return PlainTextResponse(cp["note"], media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-cache"})


@router.get(
    "/tile/entries/{rest:path}",
    response_class=Response,
    responses={**responses(404), 200: {"content": BINARY, "description": "entry bundle"}},
)
async def get_entry_bundle(rest: str, ctx: AppContext = Depends(get_ctx)):
    """Entry bundle N: the canonical JSON of entries N·256 … N·256+W−1, each after its u16 big-endian length."""
    n, width = _parse(rest)
    lo = n * TILE_WIDTH
    async with ctx.engines.reader.connect() as conn:
        if await repository.ledger_size(conn) < lo + width:
            raise NotFound("That entry bundle is beyond the ledger.", "tile_not_found")
        rows = await repository.canonical_range(conn, lo, lo + width)
    if len(rows) != width:
        raise NotFound("That entry bundle is incomplete.", "tile_not_found")
    return _binary(entry_bundle([r.encode("utf-8") for r in rows]), width)


@router.get(
    "/tile/{level}/{rest:path}",
    response_class=Response,
    responses={**responses(404), 200: {"content": BINARY, "description": "hash tile"}},
)
async def get_hash_tile(level: str, rest: str, ctx: AppContext = Depends(get_ctx)):
    """Hash tile (L, N): the Merkle nodes at level 8·L, indexes N·256 … N·256+W−1, 32 bytes each."""
    if not level.isdigit() or len(level) > 1 or int(level) > MAX_LEVEL:
        raise NotFound("No such tile level.", "tile_not_found")
    lv = int(level)
    n, width = _parse(rest)
    lo = n * TILE_WIDTH
    async with ctx.engines.reader.connect() as conn:
        if (await repository.ledger_size(conn)) >> (TILE_HEIGHT * lv) < lo + width:
            raise NotFound("That tile is beyond the ledger.", "tile_not_found")
        rows = await repository.node_hashes(conn, TILE_HEIGHT * lv, lo, lo + width)
    if len(rows) != width:
        raise NotFound("That tile's nodes are not stored.", "tile_not_found")
    return _binary(hash_tile(rows), width)
