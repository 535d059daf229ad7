"""What one webhook endpoint subscribed to every event costs the redemption path, measured A/B interleaved.

    python bench/webhooks_overhead.py [--rounds 6] [--duration 4] [--concurrency 256] [--merchants 64]
                                      [--database-url postgresql://...] [--dispatcher process|task]

Two servers run side by side on fresh SQLite data folders (or fresh PostgreSQL databases with
--database-url): on one, the operator has registered one webhook endpoint subscribed to every event
type ("*"), pointing at a receiver process on this machine (a small asyncio HTTP server answering
200); on the other, no endpoint. The ask+confirm load of bench/redemptions.py goes to one server at
a time, in phases ordered with, without, without, with, ... (ABBA), so the drift of a shared, noisy
machine falls on both alike. After each phase with webhooks the run waits until every event is
delivered (the backlog must not spill into the next phase) and prints how long that took. Prints
each phase's rate, the totals, the cost per confirmed redemption (rate without ÷ rate with − 1),
the CPU used by other processes (the machine is shared), and checks at the end: money conserved on
every card, `ledger verify` OK on both, and the receiver got every event exactly once. Each phase
also shows the API process's CPU per confirmed redemption and the dispatcher's companion process's
CPU per event (`--dispatcher task` runs the dispatcher inside the API process instead, as
ESCROW_WEBHOOK_PROCESS=false does). The figure to quote is the line "one endpoint subscribed to
everything costs N% of the pairs/s".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from redemptions import (  # noqa: E402
    OUTBOX,
    BenchFailure,
    RawClient,
    check_money,
    cpu_seconds,
    create_pg_database,
    drop_pg_database,
    expect,
    free_port,
    ledger_verify,
    pairs_phase,
    process_tree,
    set_up,
    start_server,
    stop_server,
    wait_healthy,
)

# -- the receiver (a separate process: `--receiver PORT`) -----------------------------------------


class _Receiving(asyncio.Protocol):
    counts = {"posts": 0}
    ids: set = set()
    duplicates = 0

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            msg_id = None
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "webhook-id":
                    msg_id = value.strip()
            if len(self.buf) < head_end + 4 + length:
                return
            self.buf = self.buf[head_end + 4 + length :]
            if head.startswith("POST"):
                _Receiving.counts["posts"] += 1
                if msg_id in _Receiving.ids:
                    _Receiving.duplicates += 1
                _Receiving.ids.add(msg_id)
                body = b"ok"
            else:  # GET /count
                body = (
                    f'{{"posts":{_Receiving.counts["posts"]},"unique":{len(_Receiving.ids)},'
                    f'"duplicates":{_Receiving.duplicates}}}'.encode()
                )
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )


async def _serve_receiver(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Receiving, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def receiver_count(port: int) -> dict:
    import orjson

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /count HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int([h for h in head.decode().split("\r\n") if h.lower().startswith("content-length")][0].split(":")[1])
    body = await reader.readexactly(length)
    writer.close()
    return orjson.loads(body)


# -- the A/B run ----------------------------------------------------------------------------------


def _is_dispatcher(pid: int) -> bool:
    """The webhook dispatcher's companion process (its CPU is shown apart from the API process's)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"service.webhooks.dispatcher" in f.read()
    except OSError:
        return False


class Side:
    def __init__(self, hooks: bool, operator: str, database_url: str, dispatcher: str = "process"):
        self.hooks = hooks
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"escrow-hooks-{'on' if hooks else 'off'}-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
        self.env.update(
            {
                "ESCROW_DATA_DIR": str(self.data_dir),
                "ESCROW_ENV": "development",
                "ESCROW_OPERATOR_TOKEN": operator,
                "ESCROW_SQLITE_SYNCHRONOUS": "FULL",
                "ESCROW_REGISTRATION_LIMIT_PER_MINUTE": "1000000",
                "PYTHONUNBUFFERED": "1",
                "ESCROW_WEBHOOK_PROCESS": "true" if dispatcher == "process" else "false",
            }
        )
        self.database_url = database_url
        self.pg_name = ""
        self.server = None
        self.client = None
        self.cards = []
        self.mtoken = ""
        self.pairs = 0
        self.seconds = 0.0
        self.other_cpu = 0.0
        self.events = 0  # delivered so far

    @property
    def name(self) -> str:
        return "webhooks   " if self.hooks else "no webhooks"


async def events_total(client, operator: str) -> int:
    """How many events the service holds (the operator sees them all), following the cursor."""
    n, after = 0, None
    while True:
        path = "/v1/events?limit=500" + (f"&after={after}" if after else "")
        body = await expect(client, 200, "GET", path, operator)
        if not body["items"]:
            return n
        n += len(body["items"])
        after = body["next_cursor"]


async def drained(side: Side, operator: str, port: int) -> tuple[int, float]:
    """Wait until the receiver has every event the hooked server holds; (events, seconds waited)."""
    t0 = time.monotonic()
    total = await events_total(side.client, operator)
    while time.monotonic() - t0 < 120:
        if (await receiver_count(port))["unique"] >= total:
            return total, time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise BenchFailure(f"the webhook backlog did not drain within 120 s ({await receiver_count(port)} of {total})")


async def run(args) -> int:
    operator = "op_bench_" + secrets.token_hex(20)
    sides = [Side(h, operator, args.database_url, args.dispatcher) for h in (True, False)]
    rport = free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(rport)])
    try:
        for s in sides:
            if s.database_url:
                url, s.pg_name = await create_pg_database(s.database_url)
                s.env["ESCROW_DATABASE_URL"] = url
            s.server = start_server(s.env, 1, s.data_dir / "server.log")
        hooked = sides[0]
        for s in sides:
            await wait_healthy(s.server)
            s.client = RawClient("127.0.0.1", s.server.port, args.concurrency)
            if s is hooked:  # first: every event from here on is delivered (and counted)
                await expect(
                    hooked.client,
                    201,
                    "POST",
                    "/v1/webhook-endpoints",
                    operator,
                    {"url": f"http://127.0.0.1:{rport}/hooks", "event_types": ["*"]},
                )
            if "engines" in OUTBOX:  # the sign-up codes are read from this side's own database
                await OUTBOX.pop("engines").dispose()
            OUTBOX.update(data_dir=s.data_dir, database_url=s.env.get("ESCROW_DATABASE_URL", ""))
            s.mtoken, _, s.cards = await set_up(
                s.client, operator, args.concurrency, args.concurrency, 100_000, 333_333, args.merchants
            )
        hooked.events = (await drained(hooked, operator, rport))[0]
        print(
            f"two servers, {args.merchants} merchant(s) and {args.concurrency} cards each; one endpoint "
            f"subscribed to every event on the first, receiver on this machine; {args.rounds} rounds of "
            f"{args.duration:g} s per side, ABBA order",
            flush=True,
        )
        order = []
        for r in range(args.rounds):
            order += [sides[0], sides[1]] if r % 2 == 0 else [sides[1], sides[0]]
        for i, s in enumerate(order):
            pids = process_tree(s.server.proc.pid)
            api = [p for p in pids if not _is_dispatcher(p)]
            r0, a0, d0 = cpu_seconds([receiver.pid]), cpu_seconds(api), cpu_seconds(pids)
            res = await pairs_phase(s.client, s.mtoken, s.cards, args.concurrency, args.warmup, args.duration, pids)
            receiver_cpu = cpu_seconds([receiver.pid]) - r0  # (over the whole phase: an upper bound)
            api_cpu = cpu_seconds(api) - a0
            dispatcher_cpu = cpu_seconds(pids) - d0 - api_cpu
            if res.errors:
                raise BenchFailure(f"{s.name}: " + "; ".join(res.errors[:3]))
            s.pairs += res.count
            s.seconds += res.wall
            others = max(0.0, res.machine_cpu - res.server_cpu - res.client_cpu - receiver_cpu - res.db_cpu) / res.wall
            s.other_cpu += others * res.wall
            note = ""
            if s.hooks:  # drain: the backlog must not fall into the next phase
                d0 = cpu_seconds(pids) - cpu_seconds(api)
                total, lag = await drained(s, operator, rport)
                dispatcher_cpu += cpu_seconds(pids) - cpu_seconds(api) - d0
                note = (
                    f"   all {total:,} events delivered {lag:4.1f} s after the phase; dispatcher process "
                    f"{1e6 * dispatcher_cpu / max(1, total - s.events):,.0f} µs CPU per event"
                )
                s.events = total
            print(
                f"  phase {i + 1:2d}  {s.name}  {res.count / res.wall:8,.0f} confirmed redemptions/s   "
                f"API process {1e6 * api_cpu / max(1, res.count):5,.0f} µs CPU per pair   "
                f"other load {100 * others:5.1f}% of a core{note}",
                flush=True,
            )
        counts = await receiver_count(rport)
        total = await events_total(hooked.client, operator)
        for s in sides:
            await check_money(s.client, operator, s.cards)
            await s.client.close()
            s.client = None
            stop_server(s.server)
            line = ledger_verify(s.env)
            print(f"{s.name}: money conserved on {len(s.cards)} cards; {line[:60]}")
        if counts["unique"] < total or counts["duplicates"]:
            raise BenchFailure(f"receiver: {counts} for {total} events")
        on, off = (s.pairs / s.seconds for s in sides)
        print("-" * 78)
        for s, rate in zip(sides, (on, off)):
            print(
                f"{s.name}  {rate:8,.0f} confirmed redemptions/s   ({s.pairs:,} pairs in {s.seconds:.1f} s; "
                f"other load {100 * s.other_cpu / s.seconds:.1f}% of a core)"
            )
        print(
            f"receiver: {counts['posts']:,} deliveries, {counts['unique']:,} events, {counts['duplicates']} twice "
            f"(of {total:,} events)"
        )
        print(
            f"one endpoint subscribed to everything costs {100 * (1 - on / off):.1f}% of the pairs/s "
            f"({100 * (off / on - 1):.1f}% more time per confirmed redemption)"
        )
        print("ledgers verify, money conserved, every event delivered once")
        return 0
    except (BenchFailure, ConnectionError) as exc:
        print(f"\nBENCHMARK FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        for s in sides:
            log = s.data_dir / "server.log"
            if log.exists():
                print(
                    f"--- {s.name} server log (tail) ---\n" + "\n".join(log.read_text().splitlines()[-30:]),
                    file=sys.stderr,
                )
        return 1
    finally:
        for s in sides:
            if s.client is not None:
                await s.client.close()
            if s.server is not None:
                stop_server(s.server)
            if s.pg_name:
                await drop_pg_database(s.database_url, s.pg_name)
            shutil.rmtree(s.data_dir, ignore_errors=True)
        if "engines" in OUTBOX:
            await OUTBOX.pop("engines").dispose()
        receiver.terminate()
        receiver.wait(10)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6, help="rounds; each runs both sides once (default 6)")
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per phase (default 4)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each phase (default 1)")
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--merchants", type=int, default=64, help="merchants the cards are spread over (default 64)")
    p.add_argument("--database-url", default="", help="postgresql://user@host:port/name: fresh databases there")
    p.add_argument(
        "--dispatcher",
        choices=("process", "task"),
        default="process",
        help="the dispatcher in a companion process (default) or as a task of the API process",
    )
    p.add_argument("--receiver", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    if args.receiver:
        asyncio.run(_serve_receiver(args.receiver))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
