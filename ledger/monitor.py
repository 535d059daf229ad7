"""A monitor (监测方) that follows the log by its C2SP tiles alone, and checks the money rules from the entries.

`Monitor.run()` fetches `/log/checkpoint`, verifies the log's signature and a quorum of trusted
cosignatures, then reads every new entry bundle and level-0 hash tile: each entry's leaf hash must be
the tile's hash at its index, the entries must extend the tree the monitor saw last (its saved
frontier) to exactly the checkpoint's root, and the money must add up (no release or void without its
open hold, no card below zero, refunds plus releases never more than was paid in). The first bad entry is
named. State (size, root, frontier, per-card money, open holds) is saved in `--state DIR` only after a
fully verified run, so the next run picks up where this one stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from .checkpoint import CheckpointError
from .cosignature import verify_cosigned
from .hashing import b64, leaf_hash, unb64
from .merkle import Frontier
from .tiles import TILE_WIDTH, TileError, parse_entry_bundle, split_hash_tile, tile_path, tile_width
from .totals import add_entry, new_totals

__all__ = ["MonitorError", "MoneyRules", "Monitor"]

PREFETCH = 8  # tiles fetched ahead of the one being checked


class MonitorError(Exception):
    def __init__(self, reason: str, bad_seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.bad_seq = bad_seq


def _amount(e: dict, name: str, seq: int) -> int:
    v = e.get(name, 0)
    if not isinstance(v, int) or isinstance(v, bool):
        raise MonitorError(f"entry {seq}: {name} is not an integer amount of fen", seq)
    return v


@dataclass
class MoneyRules:
    """Per card [paid_in, released, refunded, held] and the open holds, as the entries state them; what each
    kind adds to the totals is `ledger.totals.add_entry`, this class checks the holds and the bounds."""

    cards: dict[str, list[int]] = field(default_factory=dict)
    holds: dict[str, str] = field(default_factory=dict)  # redemption id → card id

    def apply(self, seq: int, e: dict) -> None:
        kind, card_id = e.get("kind"), e.get("card_id")
        if card_id is None:
            return
        amount = _amount(e, "amount", seq)
        money = {"amount": amount, "merchant_share": _amount(e, "merchant_share", seq)}
        money["held_delta"] = _amount(e, "held_delta", seq)
        if kind == "purchase":
            if card_id in self.cards:
                raise MonitorError(f"entry {seq}: second purchase of card {card_id}", seq)
            if amount <= 0:
                raise MonitorError(f"entry {seq}: purchase of {amount} fen", seq)
            self.cards[card_id] = new_totals()
        s = self.cards.get(card_id)
        if s is None:
            raise MonitorError(f"entry {seq}: {kind} on card {card_id}, which was never bought", seq)
        if amount < 0:
            raise MonitorError(f"entry {seq}: negative amount {amount}", seq)
        if money["merchant_share"] < 0:
            raise MonitorError(f"entry {seq}: negative merchant share", seq)
        rid = e.get("redemption_id")
        if kind == "hold":
            if not isinstance(rid, str) or rid in self.holds:
                raise MonitorError(f"entry {seq}: hold without a new redemption id", seq)
            self.holds[rid] = card_id
        elif kind in ("release", "void"):
            if not isinstance(rid, str) or self.holds.get(rid) != card_id:
                raise MonitorError(
                    f"entry {seq}: {kind} of redemption {rid} without its open hold on card {card_id}", seq
                )
            del self.holds[rid]
        add_entry(s, kind, money)  # what the entry does to the totals: the writer's and the verify walk's rule
        paid_in, released, refunded, held = s
        if released + refunded > paid_in:
            raise MonitorError(
                f"entry {seq}: card {card_id} released {released} and refunded {refunded}, "
                f"more than the {paid_in} paid in",
                seq,
            )
        if held < 0 or held > paid_in - released - refunded:
            raise MonitorError(
                f"entry {seq}: card {card_id} below zero (escrow {paid_in - released - refunded}, held {held})", seq
            )


class Monitor:
    def __init__(
        self,
        url: str,
        log_vkey: str,
        witness_vkeys: Sequence[str] = (),
        quorum: int = 0,
        state_dir: str | Path | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/log"):
            self.url += "/log"
        self.log_vkey, self.witness_vkeys, self.quorum = log_vkey, list(witness_vkeys), quorum
        self.state_dir = Path(state_dir) if state_dir else None
        self.client = client or httpx.Client(timeout=30.0)

    # ------------------------------------------------------------ state

    def _load(self) -> tuple[int, bytes | None, Frontier, MoneyRules]:
        frontier, money = Frontier(), MoneyRules()
        if self.state_dir is None or not (self.state_dir / "state.json").exists():
            return 0, None, frontier, money
        d = orjson.loads((self.state_dir / "state.json").read_bytes())
        frontier._edge = [unb64(h) for h in d["frontier"]]
        frontier.size = int(d["size"])
        money.cards = {k: list(v) for k, v in d["cards"].items()}
        money.holds = dict(d["holds"])
        return int(d["size"]), unb64(d["root"]), frontier, money

    def _save(self, size: int, root: bytes, frontier: Frontier, money: MoneyRules, note: str) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(
            {
                "size": size,
                "root": b64(root),
                "frontier": [b64(h) for h in frontier._edge],
                "cards": money.cards,
                "holds": money.holds,
            }
        )
        for name, blob in (("state.json", data), ("checkpoint", note.encode())):
            tmp = self.state_dir / (name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_dir / name)

    # ------------------------------------------------------------ fetching

    def _get(self, path: str) -> bytes:
        resp = self.client.get(f"{self.url}/{path}")
        if resp.status_code != 200:
            raise MonitorError(f"GET {path}: HTTP {resp.status_code}")
        return resp.content

    def run(self, progress=None) -> dict:
        """Catch up with the log; returns a report with ok, size, bad_seq and reason (never raises MonitorError)."""
        try:
            return self._run(progress)
        except MonitorError as exc:
            return {"ok": False, "reason": exc.reason, "bad_seq": exc.bad_seq}
        except httpx.HTTPError as exc:
            return {"ok": False, "reason": f"cannot fetch the log: {exc}", "bad_seq": None}

    def _run(self, progress) -> dict:
        note = self._get("checkpoint").decode("utf-8", "replace")
        try:
            cp = verify_cosigned(note, self.log_vkey, [*self.witness_vkeys], self.quorum)
        except CheckpointError as exc:
            raise MonitorError(f"checkpoint: {exc}") from None
        old_size, old_root, frontier, money = self._load()
        if cp.tree_size < old_size:
            raise MonitorError(f"the log shrank from {old_size} to {cp.tree_size} entries (rollback)")
        if cp.tree_size == old_size and old_root is not None and cp.root_hash != old_root:
            raise MonitorError(f"same size {old_size} as last time, different root (fork)")
        seq = old_size
        size = cp.tree_size
        first, last = seq // TILE_WIDTH, (size + TILE_WIDTH - 1) // TILE_WIDTH

        def fetch(n: int) -> tuple[bytes, bytes]:
            width = tile_width(0, n, size)
            return self._get(tile_path("entries", n, width)), self._get(tile_path(0, n, width))

        # Tiles are static files: fetch a few ahead while this thread hashes and checks the current one.
        pool = ThreadPoolExecutor(max_workers=PREFETCH)
        ahead = {n: pool.submit(fetch, n) for n in range(first, min(last, first + PREFETCH))}
        try:
            while seq < size:
                n = seq // TILE_WIDTH
                width = tile_width(0, n, size)
                if n + PREFETCH < last:
                    ahead[n + PREFETCH] = pool.submit(fetch, n + PREFETCH)
                bundle, tile = ahead.pop(n).result()
                try:
                    entries = parse_entry_bundle(bundle)
                    hashes = split_hash_tile(tile, width)
                except TileError as exc:
                    raise MonitorError(f"tile {n}: {exc}", seq) from None
                seq = self._check_tile(n, width, seq, entries, hashes, money, frontier)
                if progress:
                    progress(seq)
        finally:
            for f in ahead.values():
                f.cancel()
            pool.shutdown(wait=True)
        if frontier.root() != cp.root_hash:
            raise MonitorError(
                f"the entries do not lead to the checkpoint's root at size {size} "
                "(history rewritten, or tiles altered)",
                old_size if old_size < size else None,
            )
        self._save(size, cp.root_hash, frontier, money, note)
        return {
            "ok": True,
            "size": size,
            "root_hash": cp.root_hash.hex(),
            "new_entries": size - old_size,
            "cosigned_by": [name for name, _ in cp.witnesses],
            "cards": len(money.cards),
            "open_holds": len(money.holds),
            "bad_seq": None,
            "reason": None,
        }

    def _check_tile(
        self,
        n: int,
        width: int,
        seq: int,
        entries: list[bytes],
        hashes: list[bytes],
        money: MoneyRules,
        frontier: Frontier,
    ) -> int:
        if len(entries) != width:
            raise MonitorError(f"entry bundle {n} has {len(entries)} entries, expected {width}", n * TILE_WIDTH)
        for i in range(seq - n * TILE_WIDTH, width):
            data = entries[i]
            leaf = leaf_hash(data)
            if leaf != hashes[i]:
                raise MonitorError(f"entry {seq}: its leaf hash differs from hash tile 0/{n} (entry altered)", seq)
            try:
                e = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise MonitorError(f"entry {seq}: not JSON", seq) from None
            if not isinstance(e, dict) or e.get("seq") != seq:
                raise MonitorError(f"entry {seq}: its seq field is {e.get('seq') if isinstance(e, dict) else e!r}", seq)
            money.apply(seq, e)
            frontier.push(leaf)
            seq += 1
        return seq
