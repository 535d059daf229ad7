"""Crash safety: SIGKILL a real server mid-load, restart it, and find every answered write intact.

Several client tasks (one consumer each, sharing two merchants) buy cards, ask, confirm, reject and
refund, every POST with its own Idempotency-Key. The server is SIGKILLed at random moments (at least
five times), restarted on the same data folder / PostgreSQL database, and after every restart, before
any new traffic:

- every 2xx answer the clients received is in the database (card, redemption, refund visible over
  HTTP with the state the answers imply) and in the ledger (the answer's ledger_seq is an entry of
  the right kind for the right card / redemption);
- nothing is half-applied: every card has its purchase entry, every confirmed redemption its
  release entry, every refunded card its refund entry, and no money entry names an object the
  clients do not know of (beyond the requests whose answers were lost);
- `escrow ledger verify` exits 0 (run while the server restarts, on the state the kill left) and the
  reconciliation is consistent.

A request whose answer was lost is retried with the same Idempotency-Key after the restart; at the
end the ledger's money entries match the clients' answers exactly, so each moved money at most once.

A webhook endpoint (a receiver on loopback) subscribed to the money events is registered first: at the
end, the event of every acknowledged change, and every event the service lists, has been delivered at
least once despite the kills (deliveries in flight at a kill are sent again when their lease runs out).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from api_tests.conftest import record
from api_tests.realserver import (
    ON_POSTGRES,
    OPERATOR_TOKEN,
    Http,
    LostAnswer,
    RealServer,
    all_entries,
    fresh_database,
    gather_limited,
    new_auditor,
    new_consumer,
    new_count_product,
    new_merchant,
    new_stored_value_product,
    parsed,
    reconciliation_ok,
)
from api_tests.webhook_receiver import Receiver
from service.event_log.event_types import MONEY_TYPES

KILLS = 5
WORKERS = 8
MONEY_KINDS = ("purchase", "hold", "release", "void", "refund")


@dataclass
class CardModel:
    id: str
    consumer: str
    worker: int
    price: int
    units_total: int
    unit: str  # "uses" or "amount"
    purchase_seq: int
    status: str = "active"
    units_used: int = 0
    released: int = 0
    refunded: int = 0
    refund_seq: int | None = None


@dataclass
class RdmModel:
    id: str
    card_id: str
    units: int
    hold_seq: int
    status: str = "pending"
    ledger_seq: int | None = None  # release or void entry
    release_amount: int = 0


@dataclass
class Lost:
    kind: str
    raw: bytes
    card_id: str | None = None
    rdm_id: str | None = None
    info: dict = field(default_factory=dict)


class World:
    def __init__(self) -> None:
        self.cards: dict[str, CardModel] = {}
        self.rdms: dict[str, RdmModel] = {}
        self.successes: list[tuple[str, dict]] = []  # (kind, answer) in the order received
        self.sent = 0
        self.lost_total = 0
        self.replayed = 0
        self.fresh_on_retry = 0
        self.entry_checked_upto = 0  # successes whose ledger entry was fetched one by one


class Worker:
    def __init__(
        self,
        i: int,
        world: World,
        http: Http,
        consumer: dict,
        merchant: dict,
        products: list[dict],
        gate,
        rng: random.Random,
    ):
        self.i, self.world, self.http = i, world, http
        self.consumer, self.merchant, self.products = consumer, merchant, products
        self.gate, self.rng = gate, rng
        self.lost: Lost | None = None
        self.n = 0
        self.stop = False

    def key(self) -> str:
        self.n += 1
        return f"crash-w{self.i}-{self.n}-{secrets.token_hex(4)}"

    # ---- choosing what to do ------------------------------------------------------------------
    def _mine(self, status=("active",)) -> list[CardModel]:
        return [c for c in self.world.cards.values() if c.worker == self.i and c.status in status]

    def _pending(self) -> list[RdmModel]:
        return [
            r
            for r in self.world.rdms.values()
            if r.status == "pending" and self.world.cards[r.card_id].worker == self.i
        ]

    def _available(self, c: CardModel) -> int:
        held = sum(r.units for r in self.world.rdms.values() if r.card_id == c.id and r.status == "pending")
        return c.units_total - c.units_used - held

    def next_request(self) -> Lost:
        rng, tok_c, tok_m = self.rng, self.consumer["token"], self.merchant["api_key"]
        active, pending = self._mine(), self._pending()
        r = rng.random()
        if pending and r < 0.45:
            rd = rng.choice(pending)
            action = "confirm" if rng.random() < 0.8 else "reject"
            return Lost(
                action,
                Http.build("POST", f"/v1/redemptions/{rd.id}/{action}", tok_c, None, self.key()),
                card_id=rd.card_id,
                rdm_id=rd.id,
            )
        if active and r < 0.52:
            c = rng.choice(active)
            return Lost("refund", Http.build("POST", f"/v1/cards/{c.id}/refund", tok_c, None, self.key()), card_id=c.id)
        askable = [c for c in active if self._available(c) > 0]
        if askable and r < 0.9 and len(pending) < 6:
            c = rng.choice(askable)
            units = 1 if c.unit == "uses" else min(self._available(c), rng.choice((6_000, 12_000, 30_000)))
            return Lost(
                "ask",
                Http.build("POST", f"/v1/cards/{c.id}/redemptions", tok_m, {c.unit: units}, self.key()),
                card_id=c.id,
                info={"units": units},
            )
        p = rng.choice(self.products)
        body = {"product_id": p["id"], "payment": {"method": "wechat_pay", "reference": f"wx-{secrets.token_hex(6)}"}}
        return Lost("buy", Http.build("POST", "/v1/cards", tok_c, body, self.key()), info={"product": p})

    # ---- applying answers ---------------------------------------------------------------------
    def apply(self, req: Lost, status: int, body: dict) -> None:
        w = self.world
        expected = 201 if req.kind in ("buy", "ask") else 200
        assert status == expected, f"worker {self.i} {req.kind}: expected {expected}, got {status}: {body}"
        w.successes.append((req.kind, body))
        if req.kind == "buy":
            p = req.info["product"]
            assert body["price"] == p["price"] and body["status"] == "active", body
            unit = "uses" if p["type"] == "count" else "amount"
            w.cards[body["id"]] = CardModel(
                body["id"],
                self.consumer["id"],
                self.i,
                body["price"],
                body["balance"]["units_total"],
                unit,
                body["ledger_seq"],
            )
        elif req.kind == "ask":
            assert body["status"] == "pending" and body["card_id"] == req.card_id, body
            w.rdms[body["id"]] = RdmModel(body["id"], req.card_id, body["units"], body["hold_ledger_seq"])
        elif req.kind in ("confirm", "reject"):
            rd = w.rdms[req.rdm_id]
            want = "confirmed" if req.kind == "confirm" else "rejected"
            assert body["status"] == want and body["id"] == rd.id, body
            rd.status, rd.ledger_seq = want, body["ledger_seq"]
            if want == "confirmed":
                rd.release_amount = body["release_amount"]
                c = w.cards[rd.card_id]
                c.units_used += rd.units
                c.released += body["release_amount"]
                if c.units_used == c.units_total:
                    c.status = "exhausted"
        elif req.kind == "refund":
            c = w.cards[req.card_id]
            assert body["card_id"] == c.id and body["amount"] + body["merchant_share"] == c.price - c.released, body
            c.status, c.refund_seq = "refunded", body["ledger_seq"]
            c.refunded, c.released = body["amount"], c.released + body["merchant_share"]
            for rd in w.rdms.values():
                if rd.card_id == c.id and rd.status == "pending":
                    rd.status = "cancelled"

    async def run(self, deadline: float) -> None:
        while (not self.stop or self.lost is not None) and time.monotonic() < deadline:
            await self.gate()
            if self.stop and self.lost is None:
                return
            req = self.lost or self.next_request()
            retry = self.lost is not None
            self.world.sent += 1
            try:
                answer = await self.http.send_raw(req.raw)
            except LostAnswer:
                if not retry:
                    self.world.lost_total += 1
                self.lost = req
                continue
            if retry:
                if answer.replayed:
                    self.world.replayed += 1
                else:
                    self.world.fresh_on_retry += 1
            self.lost = None
            self.apply(req, answer.status, answer.body)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


async def check_world(http: Http, auditor: str, world: World, workers: list[Worker], final: bool) -> int:
    """Every success is in the database and the ledger; nothing half-applied. Returns successes checked."""
    lost = [w.lost for w in workers if w.lost is not None]
    assert not (final and lost), "requests left unanswered at the end"
    unsure_cards = {x.card_id for x in lost if x.card_id}
    unsure_rdms = {x.rdm_id for x in lost if x.rdm_id}
    lost_kinds = Counter(x.kind for x in lost)

    entries = await all_entries(http, auditor)
    assert [e["seq"] for e in entries] == list(range(len(entries))), "ledger sequence numbers are not 0..n-1"
    by_seq = {e["seq"]: parsed(e) for e in entries}

    # 1. Each answer's ledger entry exists, with the right kind and card (new ones fetched one by one too).
    want_kind = {"buy": "purchase", "ask": "hold", "confirm": "release", "reject": "void", "refund": "refund"}
    for kind, body in world.successes:
        seq = body["hold_ledger_seq"] if kind == "ask" else body["ledger_seq"]
        card_id = body["card_id"] if kind != "buy" else body["id"]
        e = by_seq.get(seq)
        assert e is not None, f"{kind} answered with ledger_seq {seq}, which is not in the ledger"
        assert e["kind"] == want_kind[kind] and e["card_id"] == card_id, (kind, body, e)
        if kind in ("ask", "confirm", "reject"):
            assert e["redemption_id"] == body["id"], (kind, body, e)
    new = world.successes[world.entry_checked_upto :]

    async def one_entry(item):
        kind, body = item
        seq = body["hold_ledger_seq"] if kind == "ask" else body["ledger_seq"]
        got = await http.expect(200, "GET", f"/v1/ledger/entries/{seq}", auditor)
        assert parsed(got)["kind"] == want_kind[kind], got

    await gather_limited(16, [one_entry(x) for x in new])
    world.entry_checked_upto = len(world.successes)

    # 2. Cards and redemptions as the answers left them (objects with a lost request in flight may be ahead):
    #    as each owner sees them (its lists), and at the end also one by one as the operator.
    async def owner_lists(w: Worker) -> tuple[list, list]:
        out = []
        for what in ("cards", "redemptions"):
            items, after = [], None
            for _ in range(100):
                got = await http.expect(
                    200,
                    "GET",
                    f"/v1/consumers/me/{what}?limit=200" + (f"&after={after}" if after else ""),
                    w.consumer["token"],
                )
                items.extend(got["items"])
                after = got["next_cursor"]
                if after is None:
                    break
            out.append(items)
        return out[0], out[1]

    cards_seen: dict[str, dict] = {}
    rdms_seen: dict[str, dict] = {}
    for cards, rdms in await gather_limited(8, [owner_lists(w) for w in workers]):
        cards_seen.update((c["id"], c) for c in cards)
        rdms_seen.update((r["id"], r) for r in rdms)
    if final:

        async def by_operator(path: str, seen: dict):
            got = await http.expect(200, "GET", path, OPERATOR_TOKEN)
            assert got == seen[got["id"]], (got, seen[got["id"]])

        await gather_limited(
            16,
            [by_operator(f"/v1/cards/{c}", cards_seen) for c in world.cards]
            + [by_operator(f"/v1/redemptions/{r}", rdms_seen) for r in world.rdms],
        )

    for c in world.cards.values():
        got = cards_seen.get(c.id)
        assert got is not None, f"card {c.id} (answered 201) is not in its owner's cards"
        b = got["balance"]
        assert got["price"] == b["escrow"] + b["released"] + b["refunded"] and 0 <= b["held"] <= b["escrow"], got
        assert b["units_used"] + b["units_held"] <= b["units_total"], got
        if c.id in unsure_cards:
            continue
        assert got["status"] == c.status, (c, got)
        assert (b["units_used"], b["released"], b["refunded"]) == (c.units_used, c.released, c.refunded), (c, got)
        pending_units = sum(r.units for r in world.rdms.values() if r.card_id == c.id and r.status == "pending")
        assert b["units_held"] == pending_units, (c, got)
    for r in world.rdms.values():
        got = rdms_seen.get(r.id)
        assert got is not None, f"redemption {r.id} (answered 201) is not in its consumer's redemptions"
        if r.id in unsure_rdms or r.card_id in unsure_cards:
            continue
        assert got["status"] == r.status, (r, got)
        if r.status in ("confirmed", "rejected"):
            assert got["ledger_seq"] == r.ledger_seq, (r, got)
        if r.status == "confirmed":
            assert got["release_amount"] == r.release_amount, (r, got)

    # 3. Nothing half-applied: the ledger's money entries against the objects.
    money = [(s, e) for s, e in by_seq.items() if e["kind"] in MONEY_KINDS]
    per = {k: Counter() for k in MONEY_KINDS}
    for _s, e in money:
        per[e["kind"]][e.get("redemption_id") or e["card_id"]] += 1
    for k, counts in per.items():
        dup = [x for x, n in counts.items() if n > 1]
        assert not dup, f"{k} entries repeated for {dup[:5]}"
    for c in world.cards.values():
        assert per["purchase"][c.id] == 1, f"card {c.id} has {per['purchase'][c.id]} purchase entries"
        if c.status == "refunded":
            assert per["refund"][c.id] == 1, f"refunded card {c.id} has no refund entry"
    for r in world.rdms.values():
        assert per["hold"][r.id] == 1, f"redemption {r.id} has {per['hold'][r.id]} hold entries"
        if r.status == "confirmed":
            assert per["release"][r.id] == 1 and by_seq[r.ledger_seq]["redemption_id"] == r.id, r
        if r.status in ("rejected", "cancelled"):
            assert per["void"][r.id] == 1 and per["release"][r.id] == 0, r
    unknown_cards = set(per["purchase"]) - set(world.cards)
    unknown_holds = set(per["hold"]) - set(world.rdms)
    assert len(unknown_cards) <= lost_kinds["buy"], f"purchases nobody was answered for: {unknown_cards}"
    assert len(unknown_holds) <= lost_kinds["ask"], f"holds nobody was answered for: {unknown_holds}"
    for card_id in unknown_cards:  # a purchase committed just before the kill: its card exists in full
        got = cards_seen[card_id]
        assert got["status"] == "active" and got["balance"]["escrow"] == got["price"], got
    for rid in unknown_holds:
        got = await http.expect(200, "GET", f"/v1/redemptions/{rid}", OPERATOR_TOKEN)
        assert got["card_id"] in unsure_cards, got
    extra_releases = set(per["release"]) - {r.id for r in world.rdms.values() if r.status == "confirmed"}
    assert extra_releases <= unsure_rdms, f"releases nobody confirmed: {extra_releases - unsure_rdms}"
    extra_refunds = set(per["refund"]) - {c.id for c in world.cards.values() if c.status == "refunded"}
    assert extra_refunds <= unsure_cards, f"refunds nobody asked for: {extra_refunds - unsure_cards}"
    if final:  # every request has its answer now: the ledger's money entries are exactly the answers
        assert not (unknown_cards or unknown_holds or extra_releases or extra_refunds)

    # 4. Money is conserved.
    r = await reconciliation_ok(http, auditor)
    unknown_paid = 0
    for x in unknown_cards:
        unknown_paid += cards_seen[x]["price"]
    assert r["paid_in"] == sum(c.price for c in world.cards.values()) + unknown_paid, r
    return len(world.successes)


async def verify_subprocess(env: dict) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "service.cli", "ledger", "verify"],
        env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode() + err.decode()[-2000:]


async def every_event_delivered(http: Http, world: World, receiver: Receiver) -> int:
    """Wait (bounded) until the receiver has the event of every acknowledged change and every money
    event the service lists; returns how many events that is."""
    of_answer = {
        "buy": ("card.purchased", "id"),
        "ask": ("redemption.requested", "id"),
        "confirm": ("redemption.confirmed", "id"),
        "reject": ("redemption.rejected", "id"),
        "refund": ("card.refunded", "card_id"),
    }
    acknowledged = {(of_answer[kind][0], body[of_answer[kind][1]]) for kind, body in world.successes}
    listed, after = set(), None
    for _ in range(10_000):
        path = f"/v1/events?limit=500&types={','.join(MONEY_TYPES)}" + (f"&after={after}" if after else "")
        body = await http.expect(200, "GET", path, OPERATOR_TOKEN)
        if not body["items"]:
            break
        listed |= {e["id"] for e in body["items"]}
        after = body["next_cursor"]
    missing_ack: set = set()
    missing: set = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        payloads = [orjson.loads(x.body) for x in list(receiver.received) if x.status == 200]
        got = {(p["type"], p["data"]["card_id"] if p["type"] == "card.refunded" else p["data"]["id"]) for p in payloads}
        missing_ack = acknowledged - got
        missing = listed - {p["id"] for p in payloads}
        if not missing_ack and not missing:
            return len(listed)
        await asyncio.sleep(0.25)
    raise AssertionError(
        f"{len(missing_ack)} acknowledged changes and {len(missing)} listed events never "
        f"delivered, e.g. {sorted(missing_ack)[:3]} {sorted(missing)[:3]}"
    )


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------


async def test_sigkill_mid_load_loses_nothing(capsys, rng):
    db = await fresh_database("escrow_crash")
    data_dir = Path(tempfile.mkdtemp(prefix="escrow-crash-"))
    server = RealServer(
        data_dir,
        db,
        "crash",
        ESCROW_WEBHOOK_TIMEOUT_SECONDS="2",
        ESCROW_WEBHOOK_POLL_SECONDS="0.2",
        ESCROW_WEBHOOK_RETRY_SECONDS=",".join(["0.5"] * 40),
    )
    receiver = Receiver()
    http = check_http = None
    passed = False
    t0 = time.monotonic()
    try:
        server.migrate()
        await server.start()
        check_http = server.client(16)
        http = server.client(WORKERS + 4)
        auditor = (await new_auditor(check_http))["api_key"]
        await check_http.expect(
            201,
            "POST",
            "/v1/webhook-endpoints",
            OPERATOR_TOKEN,
            {"url": receiver.url, "event_types": list(MONEY_TYPES)},
        )
        merchants = [await new_merchant(check_http, f"Crash Gym {i} 健身") for i in range(2)]
        products = [
            [await new_count_product(check_http, m), await new_stored_value_product(check_http, m)] for m in merchants
        ]
        consumers = [await new_consumer(check_http, i) for i in range(WORKERS)]

        world = World()
        up = asyncio.Event()
        up.set()
        parked = [0]

        moved = asyncio.Event()  # a worker parked, or its task ended

        async def gate():
            if not up.is_set():
                parked[0] += 1
                moved.set()
                try:
                    await asyncio.wait_for(up.wait(), 180)
                finally:
                    parked[0] -= 1

        async def all_stopped(tasks) -> bool:
            """Wait until every worker is parked at the gate or has ended (its deadline passed: on a
            loaded machine that can come mid-run); a worker's failure is raised. Bounded: 180 s."""
            end = time.monotonic() + 180
            while True:
                moved.clear()
                for t in tasks:
                    if t.done():
                        t.result()
                if parked[0] + sum(t.done() for t in tasks) >= WORKERS:
                    return True
                try:
                    await asyncio.wait_for(moved.wait(), max(0.0, end - time.monotonic()))
                except TimeoutError:
                    return False

        workers = [
            Worker(i, world, http, consumers[i], merchants[i % 2], products[i % 2], gate, random.Random(rng.random()))
            for i in range(WORKERS)
        ]
        deadline = time.monotonic() + 240
        tasks = [asyncio.create_task(w.run(deadline)) for w in workers]
        for t in tasks:
            t.add_done_callback(lambda _: moved.set())
        checked = 0
        verify_lines = []
        for kill in range(KILLS):
            before = world.sent
            await asyncio.sleep(rng.uniform(0.4, 1.6))
            for _ in range(200):  # make sure the kill lands mid-load
                if world.sent - before >= 20:
                    break
                await asyncio.sleep(0.05)
            for t in tasks:
                if t.done():
                    t.result()  # a worker's assertion fails the test now
            server.kill()
            up.clear()
            assert await all_stopped(tasks), "workers did not stop after the kill"
            # The state the kill left: verify the ledger while the server restarts (no traffic meanwhile).
            verify = asyncio.create_task(verify_subprocess(server.env))
            await server.start()
            http.drop_idle()
            check_http.drop_idle()
            checked = await check_world(check_http, auditor, world, workers, final=False)
            code, out = await verify
            assert code == 0 and "ledger OK" in out, f"ledger verify after kill {kill + 1}: exit {code}\n{out}"
            verify_lines.append(out.splitlines()[0])
            up.set()
        await asyncio.sleep(1.0)
        for w in workers:
            w.stop = True
        done, pending = await asyncio.wait(tasks, timeout=60)
        assert not pending, "workers did not finish"
        for t in done:
            t.result()
        # Lost answers of the last round were retried to completion before the workers stopped.
        assert all(w.lost is None for w in workers)
        checked = await check_world(check_http, auditor, world, workers, final=True)
        code, out = await verify_subprocess(server.env)
        assert code == 0 and "ledger OK" in out, out
        assert world.lost_total >= 1, "no answer was lost: the kills did not land mid-load"
        delivered = await every_event_delivered(check_http, world, receiver)
        record("kills", KILLS)
        record("requests", world.sent)
        record("successes checked", checked)
        record("lost answers retried", world.lost_total)
        with capsys.disabled():
            print(
                f"\ncrash safety [{'PostgreSQL' if ON_POSTGRES else 'SQLite'}]: {KILLS} kills, {world.sent} requests "
                f"sent, {checked} successes checked, {world.lost_total} answers lost and retried with their "
                f"Idempotency-Key ({world.replayed} replayed, {world.fresh_on_retry} applied on retry), "
                f"{len(world.cards)} cards; ledger verified {len(verify_lines) + 1} times; {delivered} events "
                f"delivered by webhook ({len(receiver.received)} deliveries); nothing lost "
                f"({time.monotonic() - t0:.0f} s)"
            )
        passed = True
    finally:
        if http:
            await http.close()
        if check_http:
            await check_http.close()
        server.stop()
        receiver.close()
        await db.drop()
        if passed:  # keep the server's log for a failure
            shutil.rmtree(data_dir, ignore_errors=True)
