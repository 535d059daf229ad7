"""Two service processes and two witness processes on one database keep one consistent cosigned history;
the monitor, following the tiles alone, agrees with `escrow ledger verify` and names a tampered entry.

Runs on PostgreSQL when ESCROW_TEST_DATABASE_URL is set (a fresh database), else on one SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import pytest

from api_tests.realserver import (
    OPERATOR_TOKEN,
    REPO,
    RealServer,
    fresh_database,
    gather_limited,
    ledger_verify,
    new_consumer,
    new_count_product,
    new_merchant,
)
from api_tests.witness_procs import WitnessProcess
from ledger.checkpoint import generate_private_key_pem, load_private_key, verifier_key
from ledger.cosignature import verify_cosigned
from ledger.hashing import unb64
from ledger.merkle import verify_consistency
from ledger.monitor import Monitor
from ledger.tiles import entry_bundle, parse_entry_bundle

ORIGIN = "escrow.example/ledger"


@pytest.fixture(scope="module")
async def env():
    db = await fresh_database("escrow_crash_witness")
    data_dir = Path(tempfile.mkdtemp(prefix="escrow-witness-"))
    pem = generate_private_key_pem()
    log_vkey = verifier_key(ORIGIN, load_private_key(pem))
    ws = [
        WitnessProcess(data_dir / "bank", "bank.example/witness", log_vkey),
        WitnessProcess(data_dir / "amr", "amr.example/witness", log_vkey),
    ]
    extra = {
        "ESCROW_SIGNING_KEY": pem.decode(),
        "ESCROW_WITNESSES": json.dumps([w.config() for w in ws]),
        "ESCROW_WITNESS_QUORUM": "2",
        "ESCROW_CHECKPOINT_INTERVAL_SECONDS": "0.3",
        "ESCROW_WITNESS_TIMEOUT_SECONDS": "3",
    }
    servers = [RealServer(data_dir, db, "a", **extra), RealServer(data_dir, db, "b", **extra)]
    state = {"servers": servers, "witnesses": ws, "log_vkey": log_vkey, "data_dir": data_dir}
    try:
        for w in ws:
            w.start()
        servers[0].migrate()
        for s in servers:
            await s.start()
        state["http"] = [s.client(64) for s in servers]
        yield state
    finally:
        for c in state.get("http", []):
            await c.close()
        for s in servers:
            s.stop()
        for w in ws:
            w.stop()
        await db.drop()
        if state.get("passed"):
            shutil.rmtree(data_dir, ignore_errors=True)


async def traffic(env, consumers: int, tag: str) -> None:
    """Purchases, holds and releases spread over both replicas."""
    a, b = env["http"]
    merchant = await new_merchant(a, f"Gym {tag} 健身")
    product = await new_count_product(b, merchant, price=9_000, uses=3)
    people = await gather_limited(8, [new_consumer((a, b)[i % 2], i) for i in range(consumers)])

    async def life(i, c):
        h1, h2 = (a, b) if i % 2 else (b, a)
        card = await h1.expect(
            201,
            "POST",
            "/v1/cards",
            c["token"],
            {"product_id": product["id"], "payment": {"method": "alipay", "reference": f"r-{tag}-{i}"}},
        )
        for _ in range(2):
            r = await h2.expect(201, "POST", f"/v1/cards/{card['id']}/redemptions", merchant["api_key"], {"uses": 1})
            await h1.expect(200, "POST", f"/v1/redemptions/{r['id']}/confirm", c["token"])

    await gather_limited(8, [life(i, c) for i, c in enumerate(people)])


async def settled(env, timeout: float = 60) -> dict:
    """Wait until the latest checkpoint covers the whole ledger and both witnesses cosigned it."""
    a = env["http"][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = (await a.expect(200, "GET", "/v1/escrow/reconciliation", OPERATOR_TOKEN))["ledger"]["entries"]
        cp = await a.expect(200, "GET", "/v1/ledger/checkpoint", None)
        if cp["tree_size"] == size and cp["witnessed"]:
            return cp
        await asyncio.sleep(0.2)
    raise AssertionError(f"no witnessed checkpoint of the whole ledger within {timeout} s: {cp}")


def cosigned_history(env) -> list[tuple[int, str]]:
    """Every checkpoint with its stored cosignature lines, read straight from the shared database."""
    from service.core.settings import Settings
    from service.ledger_api.walk import connect

    url = Settings(
        data_dir=env["data_dir"], database_url=env["servers"][0].env.get("ESCROW_DATABASE_URL", "")
    ).effective_database_url
    dbapi, _ = connect(url)
    try:
        cur = dbapi.cursor()
        cur.execute("SELECT tree_size, note FROM checkpoints ORDER BY tree_size")
        cps = cur.fetchall()
        cur.execute("SELECT tree_size, line FROM witness_cosignatures ORDER BY tree_size, witness")
        lines: dict[int, str] = {}
        for size, line in cur.fetchall():
            lines[int(size)] = lines.get(int(size), "") + line
    finally:
        dbapi.close()
    return [(int(size), note + lines.get(int(size), "")) for size, note in cps]


def monitor_cli(url: str, state: Path, env) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "service.cli",
        "ledger",
        "monitor",
        url,
        "--state",
        str(state),
        "--log-vkey",
        env["log_vkey"],
        "--quorum",
        "2",
    ]
    for w in env["witnesses"]:
        args += ["--witness-vkey", w.vkey]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)


async def test_two_replicas_two_witnesses_one_cosigned_history_and_the_monitor(env):
    servers, ws = env["servers"], env["witnesses"]
    await traffic(env, 56, "one")  # > 256 entries: full tiles as well as partial ones
    cp = await settled(env)
    assert cp["tree_size"] > 256

    # One history: every checkpoint either replica made extends the previous one, the cosigned ones
    # carry both witnesses, and both replicas publish the same cosigned note.
    history = cosigned_history(env)
    witnessed = []
    for _size, note in history:
        try:
            witnessed.append(verify_cosigned(note, env["log_vkey"], [w.vkey for w in ws], 2))
        except ValueError:
            verify_cosigned(note, env["log_vkey"])  # unwitnessed ones are still the log's own
    assert len(witnessed) >= 1 and witnessed[-1].tree_size == cp["tree_size"]
    a = env["http"][0]
    grown = [h for h in history if h[0] > 0]  # a checkpoint of the empty ledger proves nothing
    for x, y in zip(grown, grown[1:]):
        px, py = (verify_cosigned(n, env["log_vkey"]) for n in (x[1], y[1]))
        proof = await a.expect(200, "GET", f"/v1/ledger/consistency?first={px.tree_size}&second={py.tree_size}", None)
        verify_consistency(px.tree_size, py.tree_size, px.root_hash, py.root_hash, [unb64(h) for h in proof["proof"]])
    notes = set()
    async with httpx.AsyncClient(timeout=10) as http:
        for s in servers:
            notes.add((await http.get(f"http://127.0.0.1:{s.port}/log/checkpoint")).text)
            full = await http.get(f"http://127.0.0.1:{s.port}/log/tile/0/000")
            assert full.headers["cache-control"] == "public, max-age=31536000, immutable" and len(full.content) == 8192
            part = await http.get(f"http://127.0.0.1:{s.port}/log/tile/entries/001.p/{cp['tree_size'] - 256}")
            assert part.status_code == 200 and "immutable" not in part.headers["cache-control"]
    assert len(notes) == 1
    for w in ws:
        assert next(iter(orjson.loads(w.state_file.read_bytes())["logs"].values()))["size"] == cp["tree_size"]

    # The monitor follows the tiles only and agrees with `escrow ledger verify`.
    state = env["data_dir"] / "monitor"
    out = monitor_cli(f"http://127.0.0.1:{servers[1].port}", state, env)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    verified = ledger_verify(servers[0].env)
    assert report["size"] == cp["tree_size"] and f"ledger OK: {report['size']} entries" in verified
    assert f"root {report['root_hash']}" in verified
    assert sorted(report["cosigned_by"]) == ["amr.example/witness", "bank.example/witness"]

    # A witness restarted mid-run resumes from its state; the monitor catches up from its own state.
    ws[0].stop()
    ws[0].start()
    await traffic(env, 6, "two")
    cp2 = await settled(env)
    out = monitor_cli(f"http://127.0.0.1:{servers[0].port}", state, env)
    report2 = json.loads(out.stdout)
    assert out.returncode == 0 and report2["size"] == cp2["tree_size"]
    assert report2["new_entries"] == cp2["tree_size"] - cp["tree_size"] > 0

    # A copy of the tiles with entry 7 altered (an amount changed): the monitor names entry 7.
    base = f"http://127.0.0.1:{servers[0].port}"
    real = httpx.Client(timeout=30)

    def tampering(request: httpx.Request) -> httpx.Response:
        resp = real.get(base + request.url.path)
        body = resp.content
        if request.url.path == "/log/tile/entries/000":
            entries = parse_entry_bundle(body)
            e = orjson.loads(entries[7])
            e["tampered"] = True
            entries[7] = orjson.dumps(e, option=orjson.OPT_SORT_KEYS)
            body = entry_bundle(entries)
        return httpx.Response(resp.status_code, content=body, headers={"content-type": resp.headers["content-type"]})

    try:
        bad = Monitor(
            base, env["log_vkey"], [w.vkey for w in ws], 2, None, httpx.Client(transport=httpx.MockTransport(tampering))
        ).run()
    finally:
        real.close()
    assert bad["ok"] is False and bad["bad_seq"] == 7 and "entry 7" in bad["reason"], bad
    # A stricter policy than the log can meet fails on the checkpoint, before any entry.
    strict = Monitor(base, env["log_vkey"], [ws[0].vkey], 2).run()
    assert strict["ok"] is False and "quorum" in strict["reason"]
    env["passed"] = True
