"""C2SP tlog-tiles: tile paths, hash tiles and entry bundles (tile height 8, width 256).

A hash tile at level L, index N holds the Merkle nodes at tree level 8·L with indexes
N·256 … N·256+W−1, 32 bytes each, W = 256 for a full tile. Paths encode N in groups of three
digits, all but the last prefixed with `x` (1234067 → x001/x234/067); a partial tile is
`<N>.p/<W>`. An entry bundle holds the entries of leaves N·256 …, each as a big-endian u16
length and the bytes. Full tiles never change, so they are served immutable.
"""

from __future__ import annotations

import re
import struct

from .hashing import HASH_SIZE, node_hash

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileError",
    "encode_index",
    "tile_path",
    "parse_tile_path",
    "tiles_for_size",
    "tile_width",
    "entry_bundle",
    "parse_entry_bundle",
    "tile_node_ids",
    "hash_tile",
    "split_hash_tile",
    "tile_root",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
_GROUP = re.compile(r"x[0-9]{3}")
_LAST = re.compile(r"[0-9]{3}")


class TileError(ValueError):
    """A tile path or tile content is malformed."""


def encode_index(n: int) -> str:
    if n < 0:
        raise TileError("tile index must be >= 0")
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def tile_path(level: int | str, n: int, width: int = TILE_WIDTH) -> str:
    """`tile/<L>/<N>[.p/<W>]`; level "entries" for entry bundles."""
    if not 1 <= width <= TILE_WIDTH:
        raise TileError("tile width must be 1..256")
    path = f"tile/{level}/{encode_index(n)}"
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


def parse_tile_path(rest: str) -> tuple[int, int]:
    """(N, W) from the part after `tile/<L>/`: `x001/x234/067` or `…/067.p/12`."""
    width = TILE_WIDTH
    parts = rest.split("/")
    if len(parts) >= 2 and parts[-2].endswith(".p"):
        w = parts[-1]
        if not re.fullmatch(r"[1-9][0-9]{0,2}", w) or int(w) >= TILE_WIDTH:
            raise TileError("partial tile width must be 1..255")
        width = int(w)
        parts = parts[:-2] + [parts[-2][:-2]]
    if not parts or not _LAST.fullmatch(parts[-1]) or not all(_GROUP.fullmatch(p) for p in parts[:-1]):
        raise TileError("tile index must be groups of three digits, all but the last prefixed by x")
    if len(parts) > 7:
        raise TileError("tile index too large")
    digits = "".join(p.lstrip("x") for p in parts)
    if len(parts) > 1 and parts[0] == "x000":
        raise TileError("tile index has a leading zero group")
    return int(digits), width


def tile_width(level: int, n: int, size: int) -> int:
    """Width of tile (level, n) in a tree of `size` leaves: 256, 1..255 if partial, 0 if it does not exist."""
    count = size >> (TILE_HEIGHT * level)  # nodes at tree level 8·level
    full = count >> TILE_HEIGHT
    if n < full:
        return TILE_WIDTH
    if n == full:
        return count & (TILE_WIDTH - 1)
    return 0


def tiles_for_size(size: int) -> list[tuple[int, int, int]]:
    """Every hash tile (level, n, width) a tree of `size` leaves has, lowest level first."""
    out = []
    level = 0
    while (size >> (TILE_HEIGHT * level)) > 0:
        count = size >> (TILE_HEIGHT * level)
        for n in range((count + TILE_WIDTH - 1) >> TILE_HEIGHT):
            out.append((level, n, tile_width(level, n, size)))
        level += 1
    return out


def tile_node_ids(level: int, n: int, width: int) -> list[tuple[int, int]]:
    """Merkle (tree level, index) of each hash in tile (level, n) of `width`."""
    return [(TILE_HEIGHT * level, n * TILE_WIDTH + i) for i in range(width)]


def hash_tile(hashes: list[bytes]) -> bytes:
    return b"".join(hashes)


def split_hash_tile(data: bytes, width: int) -> list[bytes]:
    if len(data) != width * HASH_SIZE:
        raise TileError(f"hash tile of width {width} must be {width * HASH_SIZE} bytes, is {len(data)}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def tile_root(hashes: list[bytes]) -> bytes:
    """Root over a full tile's 256 hashes: the node one tile level up."""
    if len(hashes) != TILE_WIDTH:
        raise TileError("only a full tile has a root")
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def entry_bundle(entries: list[bytes]) -> bytes:
    out = bytearray()
    for e in entries:
        if len(e) > 0xFFFF:
            raise TileError("an entry longer than 65535 bytes does not fit a bundle")
        out += struct.pack(">H", len(e))
        out += e
    return bytes(out)


def parse_entry_bundle(data: bytes) -> list[bytes]:
    entries = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise TileError("entry bundle ends inside a length")
        (n,) = struct.unpack_from(">H", data, i)
        i += 2
        if i + n > len(data):
            raise TileError("entry bundle ends inside an entry")
        entries.append(bytes(data[i : i + n]))
        i += n
    return entries
