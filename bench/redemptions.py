#!/usr/bin/env python
"""Redemption benchmark: ask + confirm pairs over real HTTP against a real server process.

Starts `python -m service.cli serve` on a fresh data folder (SQLite, synchronous=FULL) or a fresh
PostgreSQL database, sets up one merchant, N consumers, a count-card product and one card per
consumer, then measures in the same run against the same server process:

  (a) the no-op authenticated GET /v1/ping rate (the framework's ceiling), and
  (b) confirmed redemptions per second: C concurrent workers, each asking (merchant token) and
      confirming (the card's consumer token) on its own card(s), for a fixed duration after a warm-up,

then checks `python -m service.cli ledger verify` prints 'ledger OK' and that money is conserved
(price == escrow + released + refunded on every card; the releases the client saw == the sum of
`released` over the cards). A figure from a run that fails these checks is not printed as a result:
the script exits non-zero.

The load generator is a small raw asyncio HTTP/1.1 client (keep-alive, Content-Length bodies, one
connection per worker, uvloop when installed) so it does not eat the server's CPU; `--client httpx`
uses httpx.AsyncClient instead, for comparison. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

try:
    import orjson

    loads = orjson.loads
    dumps = orjson.dumps
except ImportError:  # pragma: no cover
    loads = json.loads

    def dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


class BenchFailure(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# HTTP clients
# ---------------------------------------------------------------------------------------------


class _RawConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.last_used = time.monotonic()
        self._body_start = -1
        self._need = -1
        self._status = 0
        self._close_after = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed by the server ({exc})"))
        self.waiter = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return
        buf = self.buf
        if self._need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            self._status = int(head[9:12])
            i = head.find(b"\r\ncontent-length:")
            if i < 0:
                if b"transfer-encoding: chunked" in head:
                    self.waiter.set_exception(BenchFailure("chunked response: not supported by the raw client"))
                    self.waiter = None
                    return
                length = 0
            else:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
            self._close_after = b"\r\nconnection: close" in head
            self._body_start = end + 4
            self._need = end + 4 + length
        if len(buf) < self._need:
            return
        body = bytes(buf[self._body_start : self._need])
        del buf[: self._need]
        self._need = -1
        waiter, self.waiter = self.waiter, None
        if self._close_after:
            self.closed = True
            self.transport.close()
        waiter.set_result((self._status, body))

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.closed:
            raise ConnectionError("connection already closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            return await self.waiter
        finally:
            self.last_used = time.monotonic()


class RawClient:
    """A pool of raw keep-alive connections; `call` borrows one for one request."""

    name = "raw asyncio HTTP/1.1 (keep-alive, Content-Length)"

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.idle: collections.deque[_RawConn] = collections.deque()
        self.sem = asyncio.Semaphore(size)
        self.hostline = f"Host: {host}:{port}\r\n".encode()

    async def _connect(self) -> _RawConn:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_RawConn, self.host, self.port)
        return proto

    def build(self, method: str, path: str, token: str | None, body: bytes | None, key: str | None = None) -> bytes:
        parts = [f"{method} {path} HTTP/1.1\r\n".encode(), self.hostline]
        if token:
            parts.append(f"Authorization: Bearer {token}\r\n".encode())
        if key:
            parts.append(f"Idempotency-Key: {key}\r\n".encode())
        if body is not None:
            parts.append(b"Content-Type: application/json\r\n")
            parts.append(f"Content-Length: {len(body)}\r\n\r\n".encode())
            parts.append(body)
        elif method != "GET":
            parts.append(b"Content-Length: 0\r\n\r\n")
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    async def send(self, raw: bytes, retry: bool) -> tuple[int, bytes]:
        async with self.sem:
            conn = None
            now = time.monotonic()
            while self.idle:
                c = self.idle.pop()
                # The server drops idle keep-alive connections after 5 s: never reuse one near that.
                if not c.closed and now - c.last_used < 2.0:
                    conn = c
                    break
                c.transport.close()
            if conn is None:
                conn = await self._connect()
            try:
                result = await conn.send(raw)
            except ConnectionError:
                if not retry:
                    raise
                conn = await self._connect()
                result = await conn.send(raw)
            if not conn.closed:
                self.idle.append(conn)
            return result

    async def call(
        self, method: str, path: str, token: str | None = None, body: bytes | None = None, raw: bytes | None = None
    ) -> tuple[int, bytes]:
        return await self.send(raw or self.build(method, path, token, body), retry=method == "GET")

    async def close(self) -> None:
        while self.idle:
            self.idle.pop().transport.close()


class HttpxClient:
    name = "httpx.AsyncClient (HTTP/1.1 keep-alive, pool = concurrency)"

    def __init__(self, host: str, port: int, size: int) -> None:
        import httpx

        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self.client = httpx.AsyncClient(base_url=f"http://{host}:{port}", limits=limits, timeout=60.0)

    def build(self, method: str, path: str, token: str | None, body: bytes | None, key: str | None = None):
        return (method, path, token, body, key)

    async def call(
        self, method: str, path: str, token: str | None = None, body: bytes | None = None, raw=None
    ) -> tuple[int, bytes]:
        key = None
        if raw is not None:
            method, path, token, body, key = raw
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if key:
            headers["Idempotency-Key"] = key
        if body is not None:
            headers["Content-Type"] = "application/json"
        r = await self.client.request(method, path, content=body, headers=headers)
        return r.status_code, r.content

    async def close(self) -> None:
        await self.client.aclose()


async def expect(client, status: int, method: str, path: str, token: str | None = None, body=None) -> dict:
    raw_body = dumps(body) if body is not None else None
    got, content = await client.call(method, path, token, raw_body)
    if got != status:
        raise BenchFailure(f"{method} {path}: expected {status}, got {got}: {content[:400]!r}")
    return loads(content)


# ---------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children[ppid].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (from /proc/stat), to spot other load."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pids_with_cmdline(fragment: str) -> list[int]:
    """PostgreSQL backends serving our database carry its name in their process title."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if fragment.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


async def create_pg_database(url: str) -> tuple[str, str]:
    """Create a fresh database named after the URL's (plus a random suffix); returns (url, name)."""
    import asyncpg

    parts = urlsplit(url)
    base = parts.path.lstrip("/") or "escrow"
    name = f"{base}_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        database="postgres",
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment)), name


async def drop_pg_database(url: str, name: str) -> None:
    import asyncpg

    parts = urlsplit(url)
    admin = await asyncpg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        database="postgres",
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    env: dict
    log_path: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_server(env: dict, workers: int, log_path: Path, serve_cmd: str = "") -> Server:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if serve_cmd:  # diagnostics: another entry point taking the same arguments
        cmd = serve_cmd.split() + cmd[3:]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return Server(proc, port, env, log_path)


async def wait_healthy(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchFailure(f"the server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(req)
            data = await reader.read()
            writer.close()
            if data.startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise BenchFailure(f"the server did not answer /healthz within {timeout:.0f} s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


def valid_uscc(rng: random.Random) -> str:
    from service.core.uscc import ALPHABET, check_character

    body = "91" + "".join(rng.choice("0123456789") for _ in range(6)) + "".join(rng.choice(ALPHABET) for _ in range(9))
    return body + check_character(body)


@dataclass
class Card:
    id: str
    consumer_token: str
    price: int
    merchant_token: str = ""
    released_seen: int = 0
    confirmed: int = 0


async def gather_limited(n: int, limit: int, fn):
    sem = asyncio.Semaphore(limit)

    async def one(i):
        async with sem:
            return await fn(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


OUTBOX: dict = {}  # the development server's SMS outbox, read from its database (set in run)


async def outbox_code(phone: str) -> str:
    """The code the server (ESCROW_ENV=development, outbox sender) kept for `phone`."""
    from service.consumers.sms import outbox_messages

    if "engines" not in OUTBOX:
        from service.core.settings import Settings
        from service.db.engine import make_engines
        from service.security.keys import load_keys

        settings = Settings(data_dir=OUTBOX["data_dir"], database_url=OUTBOX.get("database_url", ""))
        OUTBOX["engines"], OUTBOX["vault"] = make_engines(settings), load_keys(settings).phone
    messages = await outbox_messages(OUTBOX["engines"].reader, OUTBOX["vault"], phone, 1)
    return messages[-1]["code"]


async def write_batches() -> str:
    """How the asks and confirms were batched: every ledger entry of a batch carries the batch's one
    time, so the hold and release entries grouped by time are the write batches (warm-up included)."""
    from sqlalchemy import text

    if "engines" not in OUTBOX:
        return "(unknown)"
    async with OUTBOX["engines"].reader.connect() as conn:
        rows = await conn.execute(
            text("SELECT COUNT(*) FROM ledger_entries WHERE kind IN ('hold', 'release') GROUP BY time")
        )
        sizes = sorted(int(n) for (n,) in rows)
    if not sizes:
        return "(none)"
    return (
        f"{len(sizes):,} batches of asks/confirms, {sum(sizes) / len(sizes):.1f} per batch "
        f"(p50 {sizes[len(sizes) // 2]}, p90 {sizes[int(len(sizes) * 0.9)]}, max {sizes[-1]})"
    )


async def set_up(client, operator: str, consumers: int, concurrency: int, uses: int, price: int, merchants: int = 1):
    rng = random.Random(secrets.randbits(64))
    shops = []
    for m in range(merchants):
        merchant = await expect(
            client,
            201,
            "POST",
            "/v1/merchants",
            operator,
            {"name": f"Bench Gym {m} 基准健身", "uscc": valid_uscc(rng), "category": "fitness"},
        )
        mtoken = merchant["api_key"]
        product = await expect(
            client,
            201,
            "POST",
            "/v1/products",
            mtoken,
            {"type": "count", "name": f"{uses}-visit card 次卡", "price": price, "uses": uses, "valid_days": 365},
        )
        shops.append((mtoken, product))

    async def one(i):
        mtoken, product = shops[i % len(shops)]
        phone = "13" + "".join(rng.choice("0123456789") for _ in range(9))
        started = await expect(client, 202, "POST", "/v1/consumers/verifications", None, {"phone": phone})
        c = await expect(
            client,
            201,
            "POST",
            "/v1/consumers",
            None,
            {
                "name": f"Consumer {i} 顾客",
                "phone": phone,
                "verification_id": started["verification_id"],
                "code": await outbox_code(phone),
            },
        )
        card = await expect(
            client,
            201,
            "POST",
            "/v1/cards",
            c["token"],
            {
                "product_id": product["id"],
                "payment": {"method": "wechat_pay", "reference": f"wx-bench-{i}-{secrets.token_hex(4)}"},
            },
        )
        return Card(card["id"], c["token"], card["price"], mtoken)

    cards = await gather_limited(consumers, concurrency, one)
    return shops[0][0], shops[0][1], cards


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


@dataclass
class Window:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class PhaseResult:
    count: int = 0
    lat_a: list = field(default_factory=list)
    lat_b: list = field(default_factory=list)
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    db_cpu: float = 0.0
    machine_cpu: float = 0.0
    wall: float = 0.0
    errors: list = field(default_factory=list)


DB_NAME = ""


async def timed_phase(
    worker, concurrency: int, warmup: float, duration: float, server_pids: list[int], on_start=None
) -> PhaseResult:
    loop_start = time.perf_counter()
    window = Window(loop_start + warmup, loop_start + warmup + duration)
    result = PhaseResult()
    tasks = [asyncio.create_task(worker(i, window, result)) for i in range(concurrency)]
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    db_pids = pids_with_cmdline(DB_NAME) if DB_NAME else []
    d0 = cpu_seconds(db_pids)
    c0, s0, m0, w0 = time.process_time(), cpu_seconds(server_pids), machine_busy_seconds(), time.perf_counter()
    if on_start:
        on_start()
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    c1, s1, m1, w1 = time.process_time(), cpu_seconds(server_pids), machine_busy_seconds(), time.perf_counter()
    result.db_cpu = cpu_seconds(db_pids) - d0
    await asyncio.gather(*tasks)
    result.client_cpu, result.server_cpu, result.wall = c1 - c0, s1 - s0, w1 - w0
    result.machine_cpu = m1 - m0
    return result


async def ping_phase(client, cards: list[Card], concurrency: int, warmup: float, duration: float, pids) -> PhaseResult:
    async def worker(i, window: Window, res: PhaseResult):
        raw = client.build("GET", "/v1/ping", cards[i % len(cards)].consumer_token, None)
        while True:
            t0 = time.perf_counter()
            if t0 > window.end:
                return
            status, body = await client.call("GET", "/v1/ping", raw=raw)
            t1 = time.perf_counter()
            if status != 200:
                res.errors.append(f"GET /v1/ping: {status} {body[:200]!r}")
                return
            if window.start <= t1 <= window.end:
                res.count += 1
                res.lat_a.append(t1 - t0)

    return await timed_phase(worker, concurrency, warmup, duration, pids)


async def pairs_phase(
    client,
    mtoken: str,
    cards: list[Card],
    concurrency: int,
    warmup: float,
    duration: float,
    pids,
    on_start=None,
    keys: bool = True,
) -> PhaseResult:
    """C workers, each asking on its own cards and confirming. With `keys`, every ask and confirm
    carries an Idempotency-Key (a fresh one each: SPEC §5 asks clients to send one on every call
    that moves money)."""
    ask_body = b'{"uses":1}'
    run_tag = secrets.token_hex(4)

    async def worker(i, window: Window, res: PhaseResult):
        mine = cards[i::concurrency]
        asks = [
            client.build("POST", f"/v1/cards/{c.id}/redemptions", c.merchant_token or mtoken, ask_body) for c in mine
        ]
        k = 0
        while True:
            t0 = time.perf_counter()
            if t0 > window.end:
                return
            j = k % len(mine)
            k += 1
            card = mine[j]
            ask = (
                asks[j]
                if not keys
                else client.build(
                    "POST",
                    f"/v1/cards/{card.id}/redemptions",
                    card.merchant_token or mtoken,
                    ask_body,
                    f"ask-{run_tag}-{i}-{k}",
                )
            )
            status, body = await client.call("POST", "", raw=ask)
            t1 = time.perf_counter()
            if status != 201:
                res.errors.append(f"ask on {card.id}: {status} {body[:300]!r}")
                return
            rid = loads(body)["id"]
            path = f"/v1/redemptions/{rid}/confirm"
            status, body = await client.call(
                "POST",
                path,
                raw=client.build("POST", path, card.consumer_token, None, f"confirm-{rid}" if keys else None),
            )
            t2 = time.perf_counter()
            if status != 200:
                res.errors.append(f"confirm {rid}: {status} {body[:300]!r}")
                return
            out = loads(body)
            if out["status"] != "confirmed":
                res.errors.append(f"confirm {rid} answered status {out['status']!r}")
                return
            card.released_seen += out["release_amount"]
            card.confirmed += 1
            if window.start <= t2 <= window.end:
                res.count += 1
                res.lat_a.append(t1 - t0)
                res.lat_b.append(t2 - t1)

    return await timed_phase(worker, concurrency, warmup, duration, pids, on_start)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ms(v: float) -> str:
    return f"{v * 1000:7.2f} ms"


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


async def check_money(client, operator: str, cards: list[Card]) -> tuple[int, int]:
    async def one(i):
        return await expect(client, 200, "GET", f"/v1/cards/{cards[i].id}", operator)

    answers = await gather_limited(len(cards), 32, one)
    problems = []
    total_released = 0
    for card, got in zip(cards, answers):
        b = got["balance"]
        if got["price"] != b["escrow"] + b["released"] + b["refunded"]:
            problems.append(
                f"{card.id}: price {got['price']} != escrow {b['escrow']} + released {b['released']} "
                f"+ refunded {b['refunded']}"
            )
        if b["released"] != card.released_seen:
            problems.append(f"{card.id}: released {b['released']} but the client saw {card.released_seen} confirmed")
        if b["units_used"] != card.confirmed:
            problems.append(f"{card.id}: units_used {b['units_used']} but the client confirmed {card.confirmed}")
        total_released += b["released"]
    seen = sum(c.released_seen for c in cards)
    if seen != total_released:
        problems.append(
            f"sum of confirmed releases seen by the client {seen} != sum of released over cards {total_released}"
        )
    if problems:
        raise BenchFailure("money is NOT conserved:\n  " + "\n  ".join(problems[:20]))
    return seen, total_released


def ledger_verify(env: dict) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "ledger", "verify"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout.strip()
    if proc.returncode != 0 or "ledger OK" not in out:
        raise BenchFailure(f"ledger verify FAILED (exit {proc.returncode}):\n{out}\n{proc.stderr[-2000:]}")
    return out.splitlines()[0]


# ---------------------------------------------------------------------------------------------
# Profile (optional): py-spy on the server during the measured pairs window
# ---------------------------------------------------------------------------------------------


def start_profile(pid: int, seconds: float, out: Path, subprocesses: bool, wall: bool = False) -> subprocess.Popen:
    """py-spy on the server: by default only the thread holding the GIL (where Python time goes);
    with `wall`, every thread at every sample, idle or not, each under its own root (where the
    writer thread's wall time goes: its Python, the database, the fsync, waiting for the GIL)."""
    exe = shutil.which("py-spy")
    if not exe:
        raise BenchFailure("--profile needs py-spy (pip install py-spy)")
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(seconds))),
        "--rate",
        "200",
        "--format",
        "raw",
        "-o",
        str(out),
        "--nonblocking",
    ]
    cmd += ["--idle", "--threads"] if wall else ["--gil"]
    if subprocesses:
        cmd.append("--subprocesses")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarise_profile(path: Path, top: int = 25) -> str:
    """Collapsed stacks -> the functions with the most self and inclusive samples."""
    self_n: collections.Counter = collections.Counter()
    incl_n: collections.Counter = collections.Counter()
    own_n: collections.Counter = collections.Counter()  # the project's own code (service/, ledger/, risk/)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        names = [
            f.split(" (")[0]
            + " ("
            + f.split(" (")[1].split(":")[0].replace(str(REPO) + "/", "").split("site-packages/")[-1]
            + ")"
            if " (" in f
            else f
            for f in frames
        ]
        total += n
        if names:
            self_n[names[-1]] += n
        for name in set(names):
            incl_n[name] += n
            if any(f"({d}/" in name for d in ("service", "ledger", "risk")) and "(service/cli.py)" not in name:
                own_n[name] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples"]
    lines.append("top by self time:")
    for name, n in self_n.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {name}")
    lines.append("top by inclusive time:")
    for name, n in incl_n.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {name}")
    lines.append("the project's own functions, inclusive (SQLAlchemy's greenlet stacks are not joined to them):")
    for name, n in own_n.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {name}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def others_share(phase: PhaseResult) -> float:
    """CPU other processes used during the phase, as a share of one core."""
    return max(0.0, phase.machine_cpu - phase.server_cpu - phase.client_cpu - phase.db_cpu) / phase.wall


async def curve_one(args, workers: int, levels: list[int]) -> tuple[float, list[tuple[int, PhaseResult]], str]:
    """One server (W processes) on a fresh database: the no-op rate, then pairs at each concurrency in
    `levels`, then money and `ledger verify`. Returns (no-op rate, [(C, pairs)], verify line)."""
    global DB_NAME
    operator = "op_bench_" + secrets.token_hex(20)
    data_dir = Path(tempfile.mkdtemp(prefix="escrow-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
    env.update(
        {
            "ESCROW_DATA_DIR": str(data_dir),
            "ESCROW_ENV": "development",
            "ESCROW_OPERATOR_TOKEN": operator,
            "ESCROW_SQLITE_SYNCHRONOUS": "FULL",
            "ESCROW_REGISTRATION_LIMIT_PER_MINUTE": "1000000",
            "PYTHONUNBUFFERED": "1",
            "ESCROW_RISK_INCREMENTAL": "false" if args.no_risk else "true",
        }
    )
    pg_name = None
    if args.database_url:
        url, pg_name = await create_pg_database(args.database_url)
        env["ESCROW_DATABASE_URL"] = url
        DB_NAME = pg_name
    OUTBOX.update(data_dir=data_dir, database_url=env.get("ESCROW_DATABASE_URL", ""))
    server = start_server(env, workers, data_dir / "server.log", args.serve_cmd)
    client = None
    try:
        await wait_healthy(server)
        top = max(levels)
        client = RawClient("127.0.0.1", server.port, top)
        mtoken, _, cards = await set_up(
            client, operator, max(top, args.consumers), min(top, 64), args.uses, args.price, args.merchants
        )
        pids = process_tree(server.proc.pid)
        ping = await ping_phase(client, cards, args.concurrency, args.warmup, args.duration, pids)
        if ping.errors:
            raise BenchFailure("no-op GET failed: " + "; ".join(ping.errors[:5]))
        ping_rate = ping.count / ping.wall
        print(
            f"  {workers} process(es): no-op GET /v1/ping {ping_rate:,.0f}/s at {args.concurrency} connections "
            f"(other load {100 * others_share(ping):.0f}%)",
            flush=True,
        )
        out = []
        for c in levels:
            pairs = await pairs_phase(client, mtoken, cards, c, args.warmup, args.duration, pids, keys=not args.no_keys)
            if pairs.errors:
                raise BenchFailure(
                    f"{len(pairs.errors)} redemption(s) failed, e.g.:\n  " + "\n  ".join(pairs.errors[:5])
                )
            out.append((c, pairs))
            print(
                f"  {workers} process(es), {c:4d} connections: {pairs.count / pairs.wall:7,.0f} pairs/s, confirm p50 "
                f"{ms(pct(pairs.lat_b, 50)).strip()} p99 {ms(pct(pairs.lat_b, 99)).strip()} "
                f"(other load {100 * others_share(pairs):.0f}%)",
                flush=True,
            )
        await check_money(client, operator, cards)
        await client.close()
        client = None
        stop_server(server)
        return ping_rate, out, ledger_verify(env)
    finally:
        if client is not None:
            await client.close()
        if "engines" in OUTBOX:  # this server's outbox: the next one of the curve has its own
            await OUTBOX.pop("engines").dispose()
        stop_server(server)
        if pg_name:
            await drop_pg_database(args.database_url, pg_name)
        shutil.rmtree(data_dir, ignore_errors=True)


async def run_curve(args) -> int:
    levels = [int(x) for x in args.curve.split(",")]
    processes = [int(x) for x in args.curve_workers.split(",")]
    db = "PostgreSQL" if args.database_url else "SQLite (synchronous=FULL, WAL)"
    keys = "no Idempotency-Key" if args.no_keys else "Idempotency-Key on every ask and confirm"
    print(
        f"curve: {db}, {keys}, {args.merchants} merchant(s), warm-up {args.warmup:g} s + {args.duration:g} s "
        f"per point, concurrency {levels}, server processes {processes}",
        flush=True,
    )
    rows = []
    try:
        for w in processes:
            ping_rate, points, verify_line = await curve_one(args, w, levels)
            rows.append((w, ping_rate, points, verify_line))
    except BenchFailure as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print("=" * 94)
    print(
        f"redemption curve   {time.strftime('%Y-%m-%d %H:%M:%S')}   {os.cpu_count()} CPUs   {db}   {keys}   "
        f"{args.merchants} merchants"
    )
    print(
        f"{'procs':>5} {'conns':>5} {'pairs/s':>8} {'ask p50':>8} {'ask p99':>8} {'conf p50':>8} {'conf p99':>8} "
        f"{'÷ no-op':>7} {'other load':>10}"
    )
    for w, ping_rate, points, verify_line in rows:
        rates = [p.count / p.wall for _, p in points]
        knee = next(i for i, r in enumerate(rates) if r >= 0.8 * max(rates))
        for i, (c, p) in enumerate(points):
            mark = "  <- first at 80% of peak" if i == knee else ""
            print(
                f"{w:5d} {c:5d} {rates[i]:8,.0f} {pct(p.lat_a, 50) * 1000:8.1f} {pct(p.lat_a, 99) * 1000:8.1f} "
                f"{pct(p.lat_b, 50) * 1000:8.1f} {pct(p.lat_b, 99) * 1000:8.1f} {rates[i] / ping_rate:7.3f} "
                f"{100 * others_share(p):9.0f}%{mark}"
            )
        print(f"      no-op GET {ping_rate:,.0f}/s; peak {max(rates):,.0f} pairs/s; {verify_line[:50]}")
    print("ledger verifies, money conserved (every server of the curve)")
    print("=" * 94)
    return 0


async def run(args) -> int:
    if args.curve:
        return await run_curve(args)
    operator = "op_bench_" + secrets.token_hex(20)
    data_dir = Path(tempfile.mkdtemp(prefix="escrow-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
    env.update(
        {
            "ESCROW_DATA_DIR": str(data_dir),
            "ESCROW_ENV": "development",
            "ESCROW_OPERATOR_TOKEN": operator,
            "ESCROW_SQLITE_SYNCHRONOUS": "FULL",
            "ESCROW_REGISTRATION_LIMIT_PER_MINUTE": "1000000",
            "PYTHONUNBUFFERED": "1",
            "ESCROW_RISK_INCREMENTAL": "false" if args.no_risk else "true",
        }
    )
    pg_name = None
    db_label = f"SQLite (synchronous=FULL, WAL) in {data_dir}"
    if args.database_url:
        url, pg_name = await create_pg_database(args.database_url)
        env["ESCROW_DATABASE_URL"] = url
        global DB_NAME
        DB_NAME = pg_name
        db_label = f"PostgreSQL, fresh database {pg_name}"
    OUTBOX.update(data_dir=data_dir, database_url=env.get("ESCROW_DATABASE_URL", ""))
    server = start_server(env, args.workers, data_dir / "server.log", args.serve_cmd)
    client = None
    try:
        await wait_healthy(server)
        pids = process_tree(server.proc.pid)
        make = RawClient if args.client == "raw" else HttpxClient
        client = make("127.0.0.1", server.port, args.concurrency)

        t = time.perf_counter()
        mtoken, product, cards = await set_up(
            client, operator, args.consumers, args.concurrency, args.uses, args.price, args.merchants
        )
        setup_s = time.perf_counter() - t
        print(
            f"set up: {args.merchants} merchant(s), {len(cards)} consumers and cards ({product['uses']} uses, price {product['price']} fen) "
            f"in {setup_s:.1f} s",
            flush=True,
        )
        pids = process_tree(server.proc.pid)

        ping = await ping_phase(client, cards, args.concurrency, args.warmup, args.duration, pids)
        if ping.errors:
            raise BenchFailure("no-op GET failed: " + "; ".join(ping.errors[:5]))
        ping_rate = ping.count / ping.wall
        print(f"no-op GET /v1/ping: {ping_rate:,.0f}/s", flush=True)

        prof = None
        prof_path = Path(args.profile) if args.profile else None

        def on_start():
            nonlocal prof
            if prof_path:
                prof = start_profile(server.proc.pid, args.duration, prof_path, args.workers > 1, args.profile_wall)

        pairs = await pairs_phase(
            client, mtoken, cards, args.concurrency, args.warmup, args.duration, pids, on_start, keys=not args.no_keys
        )
        if prof is not None:
            prof.wait(timeout=args.duration + 60)
        peak = {pid: vm_hwm_kib(pid) for pid in process_tree(server.proc.pid)}
        if pairs.errors:
            raise BenchFailure(f"{len(pairs.errors)} redemption(s) failed, e.g.:\n  " + "\n  ".join(pairs.errors[:5]))
        pair_rate = pairs.count / pairs.wall

        seen, released = await check_money(client, operator, cards)
        batches_line = await write_batches()
        await client.close()
        client = None
        stop_server(server)
        verify_line = ledger_verify(env)
        total_confirmed = sum(c.confirmed for c in cards)

        ncpu = os.cpu_count() or 1
        hwm = max(peak.values()) if peak else 0
        hwm_note = f"{hwm / 1024:.1f} MiB" + (
            f" (largest of {len(peak)} processes; sum {sum(peak.values()) / 1024:.1f} MiB)" if len(peak) > 1 else ""
        )
        print()
        print("=" * 78)
        print(
            f"redemption benchmark   {time.strftime('%Y-%m-%d %H:%M:%S')}   {ncpu} CPUs, Python {sys.version.split()[0]}"
        )
        print(f"database           {db_label}")
        print(f"server             python -m service.cli serve --workers {args.workers}   (pid {server.proc.pid})")
        print(f"load generator     {client_name(args)}")
        print(
            f"run                concurrency {args.concurrency}, {len(cards)} cards over {args.merchants} merchant(s), "
            f"warm-up {args.warmup:g} s, measured {args.duration:g} s per phase, "
            + ("no Idempotency-Key" if args.no_keys else "Idempotency-Key on every ask and confirm")
        )
        print("-" * 78)
        print(
            f"confirmed redemptions/s   {pair_rate:10,.0f}   ({pairs.count:,} ask+confirm pairs in {pairs.wall:.2f} s)"
        )
        print(f"  ask      p50 {ms(pct(pairs.lat_a, 50))}   p99 {ms(pct(pairs.lat_a, 99))}")
        print(f"  confirm  p50 {ms(pct(pairs.lat_b, 50))}   p99 {ms(pct(pairs.lat_b, 99))}")
        print(f"  pair     p50 {ms(pct([a + b for a, b in zip(pairs.lat_a, pairs.lat_b)], 50))}")
        print(
            f"no-op GET /v1/ping/s      {ping_rate:10,.0f}   (p50 {ms(pct(ping.lat_a, 50)).strip()}, "
            f"p99 {ms(pct(ping.lat_a, 99)).strip()})"
        )
        print(
            f"pairs/s ÷ no-op rate      {pair_rate / ping_rate:10.3f}   (HTTP requests/s during pairs: "
            f"{2 * pair_rate:,.0f} = {2 * pair_rate / ping_rate:.2f} × no-op)"
        )
        print(f"write batches (pairs)     {batches_line}")
        print(f"server peak RSS           {hwm_note}")
        print(
            f"server CPU  (pairs)       {100 * pairs.server_cpu / pairs.wall:6.1f}% of one core   "
            f"(ping phase {100 * ping.server_cpu / ping.wall:.1f}%)"
        )
        if pairs.count:
            print(
                f"server CPU per pair       {1000 * pairs.server_cpu / pairs.count:6.3f} ms   (what a busy machine "
                "changes least: compare keys and no keys by it when the other load is high)"
            )
        print(
            f"load-gen CPU (pairs)      {100 * pairs.client_cpu / pairs.wall:6.1f}% of one core   "
            f"(ping phase {100 * ping.client_cpu / ping.wall:.1f}%)"
        )
        if pg_name:
            print(
                f"PostgreSQL CPU (pairs)    {100 * pairs.db_cpu / pairs.wall:6.1f}% of one core   "
                f"(backends serving {pg_name}; ping phase {100 * ping.db_cpu / ping.wall:.1f}%)"
            )
        others = others_share(pairs)
        print(
            f"other load (pairs)        {100 * others:6.1f}% of one core used by other processes on this "
            f"{ncpu}-CPU machine" + ("   <- figures disturbed" if others > 0.10 else "")
        )
        print("-" * 78)
        print(f"ledger verify             {verify_line[:70]}")
        print(
            f"money                     {len(cards)} cards: price == escrow + released + refunded on each; "
            f"{total_confirmed:,} confirmations,"
        )
        print(f"                          releases seen by the client {seen:,} fen == sum of released {released:,} fen")
        print("ledger verifies, money conserved")
        print("=" * 78)
        if prof_path:
            print(f"\nprofile of the server during the measured pairs window ({prof_path}):")
            print(summarise_profile(prof_path, args.profile_top))
        return 0
    except BenchFailure as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        tail = server.log_tail()
        if tail:
            print(f"--- server log (last lines) ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            await client.close()
        if "engines" in OUTBOX:
            await OUTBOX.pop("engines").dispose()
        stop_server(server)
        if pg_name and not args.keep:
            await drop_pg_database(args.database_url, pg_name)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"kept {data_dir}" + (f" and database {pg_name}" if pg_name else ""))


def client_name(args) -> str:
    name = RawClient.name if args.client == "raw" else HttpxClient.name
    return name + (", uvloop" if args.uvloop_used else ", asyncio loop")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each measured phase (default 2)")
    p.add_argument("--concurrency", type=int, default=64, help="concurrent workers / connections (default 64)")
    p.add_argument("--consumers", type=int, default=None, help="consumers, one card each (default = concurrency)")
    p.add_argument(
        "--database-url",
        default="",
        help="postgresql://user@host:port/name: run on a fresh PostgreSQL "
        "database created (and dropped) for the run, named <name>_bench_<random>",
    )
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator (default raw)")
    p.add_argument("--no-uvloop", action="store_true", help="run the load generator on the stock asyncio loop")
    p.add_argument("--uses", type=int, default=100_000, help="uses per card (default 100000, the maximum)")
    p.add_argument(
        "--price", type=int, default=333_333, help="card price in fen (default 333333: releases of 3 or 4 fen)"
    )
    p.add_argument(
        "--profile",
        default="",
        help="py-spy the server during the measured pairs window; write "
        "collapsed stacks to this file and print the top functions",
    )
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument(
        "--profile-wall",
        action="store_true",
        help="with --profile: sample every thread, idle or not (wall time per thread) instead of the GIL holder",
    )
    p.add_argument("--serve-cmd", default="", help=argparse.SUPPRESS)
    p.add_argument(
        "--merchants",
        type=int,
        default=8,
        help="merchants the cards are spread over (default 8); "
        "every write batch re-assesses the health codes of the merchants in it",
    )
    p.add_argument(
        "--no-keys",
        action="store_true",
        help="send no Idempotency-Key (by default every ask and confirm "
        "carries a fresh one, as SPEC §5 asks of clients)",
    )
    p.add_argument(
        "--curve",
        nargs="?",
        const="16,32,64,128,256,512",
        default="",
        help="measure pairs/s and latency at each of these concurrencies (default 16,32,64,128,256,512) "
        "for each --curve-workers; --duration/--warmup are per point (try --duration 4 --warmup 1)",
    )
    p.add_argument("--curve-workers", default="1,2", help="server processes for --curve (default 1,2)")
    p.add_argument(
        "--no-risk",
        action="store_true",
        help="switch off the incremental health-code updates "
        "(ESCROW_RISK_INCREMENTAL=false), to measure what they cost",
    )
    p.add_argument("--keep", action="store_true", help="keep the data folder / database after the run")
    args = p.parse_args(argv)
    if args.consumers is None:
        args.consumers = args.concurrency
    if args.consumers < args.concurrency:
        p.error("--consumers must be at least --concurrency (each worker redeems its own card)")
    args.uvloop_used = False
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            args.uvloop_used = True
        except ImportError:
            pass
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
