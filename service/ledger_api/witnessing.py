"""Asking the witnesses (见证方) to cosign each checkpoint, keeping their cosignatures, publishing them.

Runs in its own background task beside the checkpointer, never inside a write batch: a witness that
is slow or down costs the money path nothing. Every round takes the latest checkpoint and asks, in
parallel, each witness that has not cosigned it yet (C2SP tlog-witness `POST /add-checkpoint`), with a
consistency proof from the size that witness last cosigned. That size is kept in the database
(`witness_state`), shared by every replica, and corrected by the witness's own 409 answer, so replicas
racing each other only cost a retry. Failures back off exponentially per witness. A checkpoint that ends
a round without its quorum is published as unwitnessed and raises one `witness_quorum_missing` alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx
import orjson
from sqlalchemy.exc import IntegrityError

from ledger.cosignature import VKey, parse_vkey, verify_cosignature
from ledger.merkle import consistency_proof, consistency_proof_plan
from ledger.note import CheckpointError, parse_checkpoint_body, parse_note
from ledger.witness import add_checkpoint_body
from service.alerts import repository as alerts
from service.db.writer import Tx
from service.health.service import create_alert
from service.http.context import AppContext
from service.ledger_api import repository

log = logging.getLogger("escrow.witnesses")
ALERT_KIND = "witness_quorum_missing"
MAX_BACKOFF_MS = 60_000


@dataclass(frozen=True)
class WitnessConfig:
    vkey: VKey
    vkey_text: str
    url: str

    @property
    def name(self) -> str:
        return self.vkey.name


def configured(settings) -> list[WitnessConfig]:
    """The witnesses of `ESCROW_WITNESSES`; raises ValueError on a bad list or an unreachable quorum."""
    text = (settings.witnesses or "").strip()
    items = orjson.loads(text) if text else []
    if not isinstance(items, list):
        raise ValueError("ESCROW_WITNESSES must be a JSON list of {vkey, url}")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("vkey"), str) or not isinstance(item.get("url"), str):
            raise ValueError("each witness in ESCROW_WITNESSES needs a string vkey and url")
        try:
            vkey = parse_vkey(item["vkey"])
        except CheckpointError as exc:
            raise ValueError(f"ESCROW_WITNESSES: {exc}") from None
        if vkey.alg != 0x04:
            raise ValueError(f"ESCROW_WITNESSES: {vkey.name} is not a cosignature/v1 (0x04) key")
        out.append(WitnessConfig(vkey, item["vkey"].strip(), item["url"].rstrip("/")))
    if settings.witness_quorum > len(out):
        raise ValueError(f"ESCROW_WITNESS_QUORUM {settings.witness_quorum} exceeds the {len(out)} witnesses")
    return out


def _witnesses(ctx: AppContext) -> list[WitnessConfig]:
    cached = ctx.extras.get("witnesses")
    if cached is None:
        cached = ctx.extras["witnesses"] = configured(ctx.settings)
    return cached


def public_witnesses(ctx: AppContext) -> dict:
    """What a verifier needs: each witness's name and vkey, and the quorum (for `GET /v1/ledger/witnesses`)."""
    return {
        "witnesses": [{"name": w.name, "vkey": w.vkey_text} for w in _witnesses(ctx)],
        "quorum": ctx.settings.witness_quorum,
    }


# ---------------------------------------------------------------- publishing


async def cosignatures_for(conn, ctx: AppContext, tree_size: int) -> list[dict]:
    """Stored cosignatures of the checkpoint at `tree_size`, by configured witnesses, in configuration order."""
    by_vkey = {r.witness: r for r in await repository.cosignatures(conn, tree_size)}
    return [
        {
            "name": w.name,
            "vkey": w.vkey_text,
            "timestamp": int(by_vkey[w.vkey_text].cosigned_at),
            "line": by_vkey[w.vkey_text].line,
        }
        for w in _witnesses(ctx)
        if w.vkey_text in by_vkey
    ]


async def decorate(conn, ctx: AppContext, cp: dict) -> dict:
    """The checkpoint JSON with its cosignatures: `note` carries their lines, `witnessed` says if the quorum holds."""
    cosigs = await cosignatures_for(conn, ctx, int(cp["tree_size"]))
    quorum = ctx.settings.witness_quorum
    return {
        **cp,
        "note": cp["note"] + "".join(c["line"] for c in cosigs),
        "cosignatures": [{k: c[k] for k in ("name", "vkey", "timestamp")} for c in cosigs],
        "quorum": quorum,
        "witnessed": len(cosigs) >= quorum,
    }


# ---------------------------------------------------------------- asking


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _ensure_state_rows(ctx: AppContext, ws: list[WitnessConfig]) -> dict[str, object]:
    async with ctx.engines.reader.connect() as conn:
        rows = await repository.witness_states(conn)
    for w in ws:
        if w.vkey_text not in rows:
            try:
                async with ctx.engines.writer.begin() as conn:
                    await repository.add_witness_state(conn, w.vkey_text)
            except IntegrityError:
                pass  # another replica made it
    async with ctx.engines.reader.connect() as conn:
        return await repository.witness_states(conn)


async def _set_state(ctx: AppContext, w: WitnessConfig, **values) -> None:
    async with ctx.engines.writer.begin() as conn:
        await repository.set_witness_state(conn, w.vkey_text, **values)


async def _record_success(ctx: AppContext, w: WitnessConfig, size: int, line: str, timestamp: int) -> None:
    try:
        async with ctx.engines.writer.begin() as conn:
            await repository.add_cosignature(conn, size, w.vkey_text, line, timestamp)
    except IntegrityError:
        pass  # another replica stored this witness's cosignature of this checkpoint first
    async with ctx.engines.writer.begin() as conn:
        await repository.witness_cosigned(conn, w.vkey_text, size)


async def _record_failure(ctx: AppContext, w: WitnessConfig, failures: int, error: str) -> None:
    backoff = min(MAX_BACKOFF_MS, 1000 * (1 << min(failures, 10)))
    log.warning("witness %s: %s (retry in %d ms)", w.name, error, backoff)
    await _set_state(ctx, w, failures=failures + 1, retry_after_ms=_now_ms() + backoff, last_error=error[:500])


async def _proof(ctx: AppContext, old: int, size: int) -> list[bytes]:
    if old == 0 or old == size:
        return []
    async with ctx.engines.reader.connect() as conn:
        nodes = await repository.fetch_nodes(conn, consistency_proof_plan(old, size))
    return consistency_proof(old, size, nodes)


async def _ask(ctx: AppContext, client: httpx.AsyncClient, w: WitnessConfig, state, size: int, note: str) -> str:
    """One witness, one checkpoint: returns "cosigned", "behind" (it has cosigned a later one) or "failed"."""
    body = parse_note(note).body
    old = int(state.last_size)
    try:
        for _ in range(4):
            if old > size:
                return "behind"
            resp = await client.post(
                w.url + "/add-checkpoint",
                content=add_checkpoint_body(old, await _proof(ctx, old, size), note),
                headers={"Content-Type": "text/plain"},
            )
            if resp.status_code == 409 and resp.headers.get("content-type", "").startswith("text/x.tlog.size"):
                hint = resp.text.strip()
                if not hint.isdigit():
                    raise ValueError(f"409 with a bad size {hint!r}")
                old = int(hint)
                await _set_state(ctx, w, last_size=old)
                continue
            if resp.status_code != 200:
                raise ValueError(f"HTTP {resp.status_code}: {resp.text[:200].strip()}")
            for line in resp.text.splitlines(keepends=True):
                parts = line.rstrip("\n").split(" ")
                if len(parts) != 3 or parts[1] != w.name:
                    continue
                try:
                    blob = parse_note(body + "\n" + line).signatures[0][1]
                    timestamp = verify_cosignature(body, w.vkey, blob)
                except CheckpointError:
                    continue
                await _record_success(ctx, w, size, line if line.endswith("\n") else line + "\n", timestamp)
                return "cosigned"
            raise ValueError("the answer holds no valid cosignature by this witness")
        raise ValueError("the witness kept answering 409 with another size")
    except (httpx.HTTPError, ValueError, OSError) as exc:
        await _record_failure(ctx, w, int(state.failures), f"{type(exc).__name__}: {exc}")
        return "failed"


async def _alert_op(tree_size: int, have: list[str], missing: list[str], quorum: int):
    async def op(tx: Tx) -> bool:
        seq = tree_size - 1
        if await alerts.exists(tx.conn, ALERT_KIND, seq):
            return False
        reasons = [{"tree_size": tree_size, "cosigned_by": have, "missing": missing, "quorum": quorum}]
        # The one way an alert is raised: its row, its alert.created event, the long-polls woken after commit.
        await create_alert(tx, "", ALERT_KIND, None, None, reasons, seq)
        return True

    return op


async def witness_latest(ctx: AppContext, client: httpx.AsyncClient | None = None) -> dict | None:
    """One round for the latest checkpoint; returns {tree_size, results, cosigned, witnessed} or None."""
    ws = _witnesses(ctx)
    if not ws:
        return None
    async with ctx.engines.reader.connect() as conn:
        row = await repository.checkpoint_row(conn)
        if row is None or int(row.tree_size) == 0:
            return None
        size = int(row.tree_size)
        done = await repository.cosigning_witnesses(conn, size)
    parse_checkpoint_body(parse_note(row.note).body)
    states = await _ensure_state_rows(ctx, ws)
    now = _now_ms()
    todo = [w for w in ws if w.vkey_text not in done and int(states[w.vkey_text].retry_after_ms) <= now]
    results: dict[str, str] = {w.name: "cosigned" for w in ws if w.vkey_text in done}
    if todo:
        own = client is None
        client = client or httpx.AsyncClient(timeout=ctx.settings.witness_timeout_seconds)
        try:
            answers = await asyncio.gather(*(_ask(ctx, client, w, states[w.vkey_text], size, row.note) for w in todo))
        finally:
            if own:
                await client.aclose()
        results.update({w.name: a for w, a in zip(todo, answers)})
    have = [n for n, r in results.items() if r == "cosigned"]
    quorum = ctx.settings.witness_quorum
    tried_all = all(w.name in results for w in ws)
    if len(have) < quorum and tried_all:
        missing = [w.name for w in ws if results.get(w.name) != "cosigned"]
        async with ctx.engines.reader.connect() as conn:
            newest = await repository.latest_checkpoint_size(conn, -1)
        if newest == size:  # a later checkpoint superseded this one: it is that one's quorum that counts
            await ctx.writer.run(await _alert_op(size, have, missing, quorum))
    return {"tree_size": size, "results": results, "cosigned": len(have), "witnessed": len(have) >= quorum}


async def run_forever(ctx: AppContext) -> None:
    """Witness the latest checkpoint, about every second (the checkpointer makes one every few seconds)."""
    try:
        ws = _witnesses(ctx)
    except ValueError:
        log.exception("bad witness configuration: no witnessing")
        return
    if not ws:
        return
    period = min(1.0, ctx.settings.checkpoint_interval_seconds)
    limits = httpx.Limits(max_keepalive_connections=len(ws) * 2)
    async with httpx.AsyncClient(timeout=ctx.settings.witness_timeout_seconds, limits=limits) as client:
        while True:
            await asyncio.sleep(period)
            try:
                await witness_latest(ctx, client)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("witnessing round failed; will retry")
