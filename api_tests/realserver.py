"""Real servers for the crash-safety, contention and backup tests.

`RealServer` runs `python -m uvicorn service.main:app` as a subprocess on a free loopback port with
its own data folder and either SQLite (a file in that folder) or its own fresh PostgreSQL database
(when ESCROW_TEST_DATABASE_URL names a server: `fresh_database()` creates `escrow_crash_<random>`
on that server and drops it afterwards). It can be SIGKILLed and restarted on the same port.

`Http` is a small raw asyncio HTTP/1.1 client (keep-alive, Content-Length bodies, as in
bench/redemptions.py): cheap enough on the CPU to drive a server hard from the same machine, and it
reports a lost answer (connection refused / reset / closed) as `LostAnswer`, never as a status.
Every wait here is bounded in time.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson

REPO = Path(__file__).resolve().parent.parent
OPERATOR_TOKEN = "op_realserver_operator_token_0123456789abcdef"
TEST_DB_URL = os.environ.get("ESCROW_TEST_DATABASE_URL", "")
ON_POSTGRES = bool(TEST_DB_URL)


class LostAnswer(Exception):
    """The request may or may not have reached the server; no answer came back."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------


def _admin_params(url: str) -> dict:
    p = urlsplit(url)
    return dict(
        host=p.hostname or "127.0.0.1",
        port=p.port or 5432,
        user=p.username or "postgres",
        password=p.password,
        database="postgres",
    )


def _with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    params = _admin_params(url)
    assert params["host"] in ("127.0.0.1", "localhost", "::1"), "real-server tests use loopback only"
    conn = await asyncpg.connect(**params, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Database:
    """None url: SQLite in the data folder. Otherwise a fresh PostgreSQL database of our own."""

    url: str | None
    name: str | None = None

    async def drop(self) -> None:
        if self.name:
            await _admin(TEST_DB_URL, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def fresh_database(prefix: str = "escrow_crash") -> Database:
    if not ON_POSTGRES:
        return Database(None)
    name = f"{prefix}_{secrets.token_hex(4)}"
    await _admin(TEST_DB_URL, f'CREATE DATABASE "{name}"')
    return Database(_with_db(TEST_DB_URL, name), name)


# ---------------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------------


def server_env(data_dir: Path, db: Database, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
    env.update(
        {
            "ESCROW_DATA_DIR": str(data_dir),
            "ESCROW_ENV": "test",
            "ESCROW_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "ESCROW_REGISTRATION_LIMIT_PER_MINUTE": "100000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if db.url:
        env["ESCROW_DATABASE_URL"] = db.url
    env.update(extra)
    return env


def cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m service.cli ARGS` with this environment (output captured, bounded in time)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def ledger_verify(env: dict) -> str:
    proc = cli(env, "ledger", "verify")
    assert proc.returncode == 0 and "ledger OK" in proc.stdout, (
        f"ledger verify failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout.strip().splitlines()[0]


class RealServer:
    def __init__(self, data_dir: Path, db: Database, name: str = "server", port: int | None = None, **extra_env: str):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = db
        self.name = name
        self.port = port or free_port()
        self.env = server_env(self.data_dir, db, **extra_env)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / f"{name}.log"
        self.starts = 0

    def migrate(self) -> None:
        proc = cli(self.env, "migrate")
        assert proc.returncode == 0, f"migrate failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"

    async def start(self, timeout: float = 60) -> RealServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "service.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {self.starts} ====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        await self.wait_healthy(timeout)
        return self

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 2)
                writer.write(req)
                data = await asyncio.wait_for(reader.read(), 2)
                writer.close()
                if data.startswith(b"HTTP/1.1 200"):
                    return
            except (TimeoutError, OSError):
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} did not answer /healthz within {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no goodbye (the process group is ours: start_new_session)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def client(self, size: int = 64) -> Http:
        return Http(self.port, size)


# ---------------------------------------------------------------------------------------------
# A raw HTTP/1.1 client
# ---------------------------------------------------------------------------------------------


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.last_used = time.monotonic()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        try:
            self.writer.close()
        except Exception:
            pass


@dataclass
class Answer:
    status: int
    body: dict | list | None
    headers: dict = field(default_factory=dict)

    @property
    def replayed(self) -> bool:
        return self.headers.get("idempotent-replayed") == "true"


class Http:
    """Keep-alive connection pool to one loopback port; `request` raises LostAnswer on any transport failure."""

    def __init__(self, port: int, size: int = 64, timeout: float = 30.0):
        self.port = port
        self.idle: collections.deque[_Conn] = collections.deque()
        self.sem = asyncio.Semaphore(size)
        self.timeout = timeout

    @staticmethod
    def build(
        method: str, path: str, token: str | None = None, body=None, key: str | None = None, port: int = 0
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if key:
            lines.append(f"Idempotency-Key: {key}")
        raw = orjson.dumps(body) if body is not None else b""
        if body is not None:
            lines.append("Content-Type: application/json")
        if body is not None or method != "GET":
            lines.append(f"Content-Length: {len(raw)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw

    async def _connect(self) -> _Conn:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(r, w)

    async def _exchange(self, conn: _Conn, raw: bytes) -> Answer:
        conn.writer.write(raw)
        await conn.writer.drain()
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        data = await conn.reader.readexactly(length) if length else b""
        if headers.get("connection", "").lower() == "close":
            conn.close()
        body = orjson.loads(data) if data and headers.get("content-type", "").startswith("application/json") else None
        return Answer(status, body, headers)

    async def send_raw(self, raw: bytes) -> Answer:
        async with self.sem:
            conn = None
            now = time.monotonic()
            while self.idle:
                c = self.idle.pop()
                if not c.closed and now - c.last_used < 2.0:  # the server drops idle keep-alive connections after 5 s
                    conn = c
                    break
                c.close()
            try:
                if conn is None:
                    conn = await self._connect()
                answer = await asyncio.wait_for(self._exchange(conn, raw), self.timeout)
            except (
                TimeoutError,
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ConnectionError,
                ValueError,
                IndexError,
            ) as exc:
                if conn is not None:
                    conn.close()
                raise LostAnswer(f"{type(exc).__name__}: {exc}") from None
            except BaseException:  # cancelled mid-exchange: the connection's state is unknown
                if conn is not None:
                    conn.close()
                raise
            conn.last_used = time.monotonic()
            if not conn.closed:
                self.idle.append(conn)
            return answer

    async def request(
        self, method: str, path: str, token: str | None = None, body=None, key: str | None = None
    ) -> Answer:
        return await self.send_raw(self.build(method, path, token, body, key, self.port))

    async def expect(
        self, status: int, method: str, path: str, token: str | None = None, body=None, key: str | None = None
    ):
        a = await self.request(method, path, token, body, key)
        assert a.status == status, f"{method} {path}: expected {status}, got {a.status}: {a.body}"
        return a.body

    def drop_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()

    async def close(self) -> None:
        self.drop_idle()


# ---------------------------------------------------------------------------------------------
# Setup and reading back, over HTTP
# ---------------------------------------------------------------------------------------------


def valid_uscc() -> str:
    import random

    from service.core.uscc import ALPHABET, check_character

    rng = random.Random(secrets.randbits(64))
    body = "91" + "".join(rng.choice("0123456789") for _ in range(6)) + "".join(rng.choice(ALPHABET) for _ in range(9))
    return body + check_character(body)


async def new_merchant(http: Http, name: str = "Hot Gym 热门健身") -> dict:
    return await http.expect(
        201, "POST", "/v1/merchants", OPERATOR_TOKEN, {"name": name, "uscc": valid_uscc(), "category": "fitness"}
    )


async def new_auditor(http: Http) -> dict:
    return await http.expect(201, "POST", "/v1/auditors", OPERATOR_TOKEN, {"name": "Custodian Bank 托管银行"})


async def new_consumer(http: Http, i: int) -> dict:
    """Verification, the code from the test outbox, registration (SPEC §8)."""
    phone = "13" + "".join(str(secrets.randbelow(10)) for _ in range(9))
    started = await http.expect(202, "POST", "/v1/consumers/verifications", None, {"phone": phone})
    outbox = await http.expect(200, "GET", f"/v1/test/sms?phone={phone}", OPERATOR_TOKEN)
    return await http.expect(
        201,
        "POST",
        "/v1/consumers",
        None,
        {
            "name": f"Consumer {i} 顾客",
            "phone": phone,
            "verification_id": started["verification_id"],
            "code": outbox["items"][-1]["code"],
        },
    )


async def new_count_product(http: Http, merchant: dict, price: int = 10_001, uses: int = 10) -> dict:
    return await http.expect(
        201,
        "POST",
        "/v1/products",
        merchant["api_key"],
        {"type": "count", "name": f"{uses}次卡", "price": price, "uses": uses, "valid_days": 365},
    )


async def new_stored_value_product(http: Http, merchant: dict, price: int = 100_000, face: int = 120_000) -> dict:
    return await http.expect(
        201,
        "POST",
        "/v1/products",
        merchant["api_key"],
        {"type": "stored_value", "name": "充值卡", "price": price, "face_value": face, "valid_days": 365},
    )


async def all_entries(http: Http, token: str) -> list[dict]:
    """Every ledger entry (auditor view), in seq order, following the cursor (bounded)."""
    items: list[dict] = []
    after = None
    for _ in range(10_000):
        path = "/v1/ledger/entries?limit=1000" + (f"&after={after}" if after is not None else "")
        body = await http.expect(200, "GET", path, token)
        items.extend(body["items"])
        if body["next_cursor"] is None:
            return items
        after = body["next_cursor"]
    raise AssertionError("ledger listing did not end")


def parsed(entry: dict) -> dict:
    return json.loads(entry["canonical"])


async def reconciliation_ok(http: Http, auditor_token: str) -> dict:
    r = await http.expect(200, "GET", "/v1/escrow/reconciliation", auditor_token)
    assert r["consistent"] is True, r
    assert r["paid_in"] == r["escrow"] + r["released"] + r["refunded"], r
    assert 0 <= r["held"] <= r["escrow"], r
    return r


async def gather_limited(limit: int, coros) -> list:
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))
