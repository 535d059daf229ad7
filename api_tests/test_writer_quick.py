"""The quick way through a write batch gives every request the answer the careful way would.

A batch of asks and confirms reads its cards and redemptions in one statement, defers its writes
and sends them merged (service/db/writer.py, service/db/raw.py). These tests put awkward mixes into
one batch over HTTP (two requests on one card, a confirm by the wrong consumer, an ask beyond the
balance, retries with one Idempotency-Key) and check each answer, every balance and the ledger;
then they make the quick way fail, by a refusal after writing and by a database refusal, and check
that it is undone or run again carefully, with the same answers.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from service.db import raw as raw_module
from service.db.raw import _grouped, _pg_writes
from service.db.writer import QuickOp, Reads
from service.http.errors import Conflict, Unavailable, Unprocessable
from service.ledger_api.service import verify_ledger

from .factories import ask, assert_error, buy_card, create_merchant, get_card, publish_count, register_consumer


class Held:
    """Makes every request under test share one batch: the writer starts its next batch only once
    all of them wait in its queue (Writer.gather), however the threads are scheduled."""

    def __init__(self, ctx):
        self.ctx = ctx

    async def __aenter__(self):
        self.batches = self.ctx.writer.batches
        return self

    async def release(self, requests: list) -> list:
        self.ctx.writer.gather(len(requests))
        tasks = []
        for r in requests:  # one at a time: each reaches the queue (past its token check) in order
            before = self.ctx.writer.enqueued
            tasks.append(asyncio.ensure_future(r))
            for _ in range(10_000):  # bounded: at most ~10 s
                if self.ctx.writer.enqueued > before:
                    break
                await asyncio.sleep(0.001)
            assert self.ctx.writer.enqueued > before, "a request never reached the writer"
        out = await asyncio.gather(*tasks, return_exceptions=True)
        assert self.ctx.writer.batches - self.batches == 1  # all of them together
        return out

    async def __aexit__(self, *exc):
        self.ctx.writer.gather(0)


async def _shop(client, cards: int):
    gym = await create_merchant(client)
    product = await publish_count(client, gym, price=10_000, uses=10)
    people = [await register_consumer(client, name=f"Consumer {i}") for i in range(cards)]
    return gym, people, [await buy_card(client, p, product) for p in people]


def _ask(client, gym, card, uses=1, key=None):
    headers = dict(gym["headers"], **({"Idempotency-Key": key} if key else {}))
    return client.post(f"/v1/cards/{card['id']}/redemptions", json={"uses": uses}, headers=headers)


def _confirm(client, person, redemption, key=None):
    headers = dict(person["headers"], **({"Idempotency-Key": key} if key else {}))
    return client.post(f"/v1/redemptions/{redemption['id']}/confirm", headers=headers)


def _reads_alone(monkeypatch, *statements: str) -> list:
    """The parameters of every one-row read (`Raw.one`) of these statements from now on: what a
    quick run should have had from its prefetch instead."""
    from service.db import raw as raw_module

    seen: list = []
    original_one = raw_module.Raw.one

    def recording_one(self, sql, params=()):
        if sql in statements:
            seen.append(params)
        return original_one(self, sql, params)

    monkeypatch.setattr(raw_module.Raw, "one", recording_one)
    return seen


@pytest.fixture(params=["at the end", "as it goes"])
def shipping(request, monkeypatch, ctx):
    """A quick run's writes leave with its next read or the commit, or also after every operation
    (`Raw.ship` with SHIP_AT 1: PostgreSQL executes them while the run goes on; SQLite never
    ships). Gives a check to call at the end: writes were shipped exactly where they can be."""
    shipped: list[bool] = []
    if request.param == "as it goes":
        monkeypatch.setattr(raw_module, "SHIP_AT", 1)
        original = raw_module.Raw.ship

        def recording(self):
            sent = original(self)
            shipped.append(sent)
            return sent

        monkeypatch.setattr(raw_module.Raw, "ship", recording)

    def check() -> None:
        if request.param == "as it goes":
            assert any(shipped) is (not ctx.settings.is_sqlite), shipped

    return check


async def _ledger_ok(ctx, held: int) -> None:
    """The chain verifies and its running totals agree with the cards."""
    report = await verify_ledger(ctx.engines.reader)
    assert report["ok"] is True, report
    assert report["ledger_totals"]["held"] == held


async def test_a_mixed_batch_answers_each_request_as_if_alone(client, ctx, shipping):
    gym, people, cards = await _shop(client, 4)
    a, b, c, d = cards
    pending_a = await ask(client, gym, a, uses=2)
    pending_b = await ask(client, gym, b, uses=3)
    pending_d = await ask(client, gym, d, uses=1)
    quick, careful = ctx.writer.quick_batches, ctx.writer.careful_retries

    async with Held(ctx) as held:
        r = await held.release(
            [
                _confirm(client, people[0], pending_a),  # card a: a confirm …
                _ask(client, gym, a, uses=3),  # … and an ask on the same card in the same batch
                _confirm(client, people[2], pending_b),  # the wrong consumer: 404, nothing moves
                _ask(client, gym, c, uses=11),  # beyond the card: 409
                _ask(client, gym, c, uses=4),
                _ask(client, gym, c, uses=5),  # a second hold on c sees the first one
                _confirm(client, people[3], pending_d, key="k-d"),
                _confirm(client, people[3], pending_d, key="k-d"),  # a retry: the same answer, replayed
            ]
        )
    assert [x.status_code for x in r] == [200, 201, 404, 409, 201, 201, 200, 200]
    assert_error(r[2], 404, "redemption_not_found")
    assert_error(r[3], 409)
    assert r[6].json() == r[7].json() and r[7].headers.get("idempotent-replayed") == "true"
    assert ctx.writer.quick_batches == quick + 1 and ctx.writer.careful_retries == careful

    balance = {card["id"]: (await get_card(client, p, card))["balance"] for p, card in zip(people, cards)}
    assert (balance[a["id"]]["units_used"], balance[a["id"]]["units_held"]) == (2, 3)
    assert (balance[b["id"]]["units_used"], balance[b["id"]]["units_held"]) == (0, 3)
    assert (balance[c["id"]]["units_used"], balance[c["id"]]["units_held"]) == (0, 9)
    assert (balance[d["id"]]["units_used"], balance[d["id"]]["units_held"]) == (1, 0)
    assert r[0].json()["card_balance"]["escrow"] == balance[a["id"]]["escrow"] == 10_000 - 2_000
    for x in balance.values():
        assert x["escrow"] + x["released"] + x["refunded"] == 10_000
    await _ledger_ok(ctx, held=sum(x["held"] for x in balance.values()))
    shipping()


async def test_quick_and_careful_operations_keep_their_order_in_the_batch(client, ctx, shipping):
    gym, people, cards = await _shop(client, 2)
    quick, careful = ctx.writer.quick_batches, ctx.writer.careful_retries

    def units_held(card_id: str):  # an operation that did not say what it reads: the careful way
        async def op(tx):
            return tx.conn.raw.one("SELECT units_held FROM cards WHERE id = ?", (card_id,))[0]

        return op

    async with Held(ctx) as held:
        r = await held.release(
            [
                ctx.writer.run(units_held(cards[0]["id"])),
                _ask(client, gym, cards[0], uses=4),
                _ask(client, gym, cards[1], uses=2),
                ctx.writer.run(units_held(cards[1]["id"])),
            ]
        )
    # The first read came before the asks; the last one after, and sees their (deferred) writes.
    assert (r[0], r[1].status_code, r[2].status_code, r[3]) == (0, 201, 201, 2)
    assert ctx.writer.quick_batches == quick + 1 and ctx.writer.careful_retries == careful
    balances = [(await get_card(client, p, c))["balance"] for p, c in zip(people, cards)]
    await _ledger_ok(ctx, held=sum(b["held"] for b in balances))
    shipping()


def _refusing_ask(card_id: str, merchant_id: str):
    """An ask-shaped operation that writes and then refuses: its queued writes must go."""

    async def op(tx):
        tx.conn.raw.run("UPDATE cards SET payment_reference = 'written before the refusal' WHERE id = ?", (card_id,))
        tx.append("hold", card_id=card_id, merchant_id=merchant_id, units=1, amount=1, held_delta=0)
        raise Conflict("refused after writing", "refused_for_the_test")

    return QuickOp(op, Reads(card=card_id))


def _breaking_ask(card_id: str):
    """An ask-shaped operation whose write the database refuses (CHECK held <= escrow)."""

    async def op(tx):
        tx.conn.raw.run("UPDATE cards SET held = ? WHERE id = ?", (10_001, card_id))
        return "should not succeed"

    return QuickOp(op, Reads(card=card_id))


@pytest.mark.parametrize("how", ["refuses after writing", "database refuses"])
async def test_a_failing_operation_leaves_nothing_and_the_rest_commit(client, ctx, how, shipping):
    gym, people, cards = await _shop(client, 3)
    quick, careful = ctx.writer.quick_batches, ctx.writer.careful_retries
    failing = (
        _refusing_ask(cards[1]["id"], gym["id"]) if how == "refuses after writing" else _breaking_ask(cards[1]["id"])
    )
    async with Held(ctx) as held:
        r = await held.release(
            [_ask(client, gym, cards[0], uses=2), ctx.writer.run(failing), _ask(client, gym, cards[2], uses=3)]
        )
    assert [r[0].status_code, r[2].status_code] == [201, 201]
    expected = "refused_for_the_test" if how == "refuses after writing" else "constraint_violation"
    assert isinstance(r[1], Conflict) and r[1].code == expected
    balances = [(await get_card(client, p, card))["balance"] for p, card in zip(people, cards)]
    assert [b["units_held"] for b in balances] == [2, 0, 3]

    async def read(tx):
        return tx.conn.raw.one("SELECT held, payment_reference FROM cards WHERE id = ?", (cards[1]["id"],))

    held_now, reference = await ctx.writer.run(read)
    assert held_now == 0 and reference != "written before the refusal"
    assert ctx.writer.quick_batches - quick == (1 if how == "refuses after writing" else 0)
    assert ctx.writer.careful_retries - careful == (0 if how == "refuses after writing" else 1)
    await _ledger_ok(ctx, held=sum(b["held"] for b in balances))
    shipping()


async def test_a_batch_that_breaks_while_its_shipped_writes_are_unanswered_leaves_nothing(client, ctx, monkeypatch):
    """Writes shipped during a quick run (PostgreSQL) and not yet answered when the batch breaks
    (here a hook that raises before the ledger flush) are rolled back with the rest; the request is
    told nothing changed, and the writer's connection serves the next batch."""
    gym, people, cards = await _shop(client, 1)
    card_id = cards[0]["id"]
    monkeypatch.setattr(raw_module, "SHIP_AT", 1)
    shipped: list[bool] = []
    original = raw_module.Raw.ship
    monkeypatch.setattr(raw_module.Raw, "ship", lambda self: shipped.append(original(self)) or shipped[-1])

    async def breaks(tx):
        raise RuntimeError("broken for the test")

    async def op(tx):
        tx.conn.raw.run("UPDATE cards SET payment_reference = 'shipped, then abandoned' WHERE id = ?", (card_id,))
        tx.append("hold", card_id=card_id, merchant_id=gym["id"], units=1, amount=1, held_delta=0)
        tx.before_flush.append(breaks)
        return "answered"

    size = (await verify_ledger(ctx.engines.reader))["size"]
    with pytest.raises(Unavailable):
        await ctx.writer.run(QuickOp(op, Reads(card=card_id)))
    assert shipped == [not ctx.settings.is_sqlite]

    async def read(tx):
        return tx.conn.raw.one("SELECT payment_reference FROM cards WHERE id = ?", (card_id,))[0]

    assert await ctx.writer.run(read) != "shipped, then abandoned"
    assert (await verify_ledger(ctx.engines.reader))["size"] == size
    assert (await _ask(client, gym, cards[0], uses=2)).status_code == 201
    await _ledger_ok(ctx, held=(await get_card(client, people[0], cards[0]))["balance"]["held"])


AWKWARD = [
    "",
    "'",
    "''",
    "\\",
    "\\'",
    "'; DROP TABLE cards; --",
    "$$",
    "$tag$",
    "%s",
    "%%",
    "?",
    '"',
    "E'x'",
    "李雷 💳 铁馆健身",
    "line\nbreak\ttab\r",
    "\\x41",
    "-- comment",
    "/* c */",
    "\u2028",
    "a" * 5000,
]


async def test_merged_writes_store_awkward_values_exactly(client, ctx, monkeypatch):
    """Deferred row writes merged into one statement over arrays (PostgreSQL's pipeline) or one
    executemany (SQLite) store every string, however awkward, and every time exactly."""
    _, _, cards = await _shop(client, 2)
    now = datetime(2026, 11, 25, 12, 34, 56, 789012, tzinfo=UTC)
    keys = [("test-caller", f"awkward-{i}") for i in range(len(AWKWARD))]
    references = ["'; DROP TABLE cards; --", "%s ? $1 李雷"]
    merged: list = []
    original = raw_module._pg_writes

    def spy(pending):
        out = original(pending)
        merged.extend(out)
        return out

    monkeypatch.setattr(raw_module, "_pg_writes", spy)

    async def op(tx):
        raw = tx.conn.raw
        raw.defer()
        for (caller, key), value in zip(keys, AWKWARD):
            raw.store_key(caller, key, value[:64], 200, value + "!", now)
        for card, value in zip(cards, references):
            raw.run("UPDATE cards SET payment_reference = ? WHERE id = ?", (value, card["id"]))
        raw.stop_deferring()
        stored = raw.stored_keys(keys)
        written = [raw.one("SELECT payment_reference FROM cards WHERE id = ?", (c["id"],))[0] for c in cards]
        when = raw.one("SELECT created_at FROM idempotency_keys WHERE caller = ? AND key = ?", keys[0])[0]
        return stored, written, raw.pt(when)

    stored, written, when = await ctx.writer.run(op)
    assert stored == {k: (v[:64], 200, v + "!") for k, v in zip(keys, AWKWARD)}
    assert written == references and when == now
    if not ctx.settings.is_sqlite:  # one INSERT and one UPDATE carried all the rows, as arrays
        inserts = [(sql, p) for sql, p in merged if sql.startswith("INSERT INTO idempotency_keys")]
        updates = [(sql, p) for sql, p in merged if sql.startswith("UPDATE cards")]
        assert len(inserts) == 1 and "unnest(" in inserts[0][0] and inserts[0][1][4] == [v + "!" for v in AWKWARD]
        assert len(updates) == 1 and "unnest(" in updates[0][0] and updates[0][1][1] == references


async def test_a_merged_write_refuses_a_string_too_long_for_its_column(ctx):
    """The arrays are cast without a length: PostgreSQL refuses a string longer than its column (an
    explicit cast to VARCHAR(n) would have cut it short), as it does a single-row write's. SQLite
    keeps any length (the API checks lengths before the write path): the string is stored whole."""
    now = datetime(2026, 11, 25, 12, 34, 56, tzinfo=UTC)
    keys = [("test-caller", f"long-{i}") for i in range(2)]

    async def op(tx):
        raw = tx.conn.raw
        raw.defer()
        for caller, key in keys:
            raw.store_key(caller, key, "h" * 65, 200, "{}", now)  # request_hash is VARCHAR(64)
        raw.stop_deferring()

    async def read(tx):
        return tx.conn.raw.stored_keys(keys)

    if ctx.settings.is_sqlite:
        await ctx.writer.run(op)
        assert await ctx.writer.run(read) == {k: ("h" * 65, 200, "{}") for k in keys}
        return
    with pytest.raises(Unprocessable) as refused:
        await ctx.writer.run(op)
    assert refused.value.code == "invalid_value"
    assert await ctx.writer.run(read) == {}


def test_merged_writes_never_write_one_row_twice_out_of_order():
    """Merging groups row writes by their statement; a row written twice keeps the writes' order."""
    a = "UPDATE cards SET held = ? WHERE id = ?"
    b = "UPDATE cards SET units_held = ? WHERE id = ?"
    pending = [(a, (1, "x"), False), (b, (2, "y"), False), (a, (3, "x"), False)]
    assert _pg_writes(pending) == [(a, (1, "x")), (b, (2, "y")), (a, (3, "x"))]
    distinct = [(a, (1, "x"), False), (b, (2, "y"), False), (a, (3, "z"), False)]
    merged = _pg_writes(distinct)
    # a merged UPDATE finds its rows by primary key: sequential scans off around it, for it alone; its
    # text is the same for any number of rows (one prepared statement), the rows go as arrays
    assert len(merged) == 4 and merged[1] == (
        'UPDATE cards AS t SET held = v."held" FROM unnest(?::VARCHAR[], ?::BIGINT[]) AS v("id", "held") '
        "WHERE t.id = v.id",
        (["x", "z"], [1, 3]),
    )
    assert merged[0] == ("SET LOCAL enable_seqscan = off", None)
    assert merged[2] == ("SET LOCAL enable_seqscan TO DEFAULT", None)
    assert merged[3] == (b, (2, "y"))
    insert = "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)"
    rows = [(0, 1, b"a"), (1, 0, b"b")]
    assert _pg_writes([(insert, rows, True)]) == [
        (
            'INSERT INTO merkle_nodes (level, idx, hash) SELECT v."level", v."idx", v."hash" FROM '
            'unnest(?::INTEGER[], ?::BIGINT[], ?::BYTEA[]) AS v("level", "idx", "hash")',
            ([0, 1], [1, 0], [b"a", b"b"]),
        )
    ]
    # a constant with a comma in it is not taken apart: the statement goes as written, once per row
    quoted = "UPDATE cards SET payment_reference = 'a, b' WHERE id = ?"
    assert _pg_writes([(quoted, ("x",), False), (quoted, ("z",), False)]) == [(quoted, ("x",)), (quoted, ("z",))]


def test_sqlite_sends_row_writes_of_one_statement_together_unless_a_row_repeats():
    """On SQLite the deferred row writes of one statement text go as one executemany each, in the
    order each first appears; a row written twice, or a write that is no row write, keeps the order."""
    a = "UPDATE cards SET held = ? WHERE id = ?"
    b = "INSERT INTO redemptions (id, card_id, units) VALUES (?, ?, ?)"
    other = "DELETE FROM holds WHERE card_id = ?"
    pending = [(a, (1, "x"), False), (b, ("r1", "x", 1), False), (a, (2, "y"), False), (b, ("r2", "y", 1), False)]
    assert _grouped(pending) == [(a, [(1, "x"), (2, "y")], True), (b, [("r1", "x", 1), ("r2", "y", 1)], True)]
    twice = [(a, (1, "x"), False), (b, ("r1", "x", 1), False), (a, (2, "x"), False)]
    assert _grouped(twice) == twice
    barrier = [(a, (1, "x"), False), (other, ("x",), False), (a, (2, "y"), False)]
    assert _grouped(barrier) == barrier


async def test_a_batch_sends_no_begin_of_its_own_and_leaves_the_connection_as_it_found_it(client, ctx, monkeypatch):
    """PostgreSQL: the batch's BEGIN goes in the same message as its first statement (psycopg would
    send it alone, a round trip); afterwards the connection is back out of autocommit mode. SQLite
    keeps its BEGIN IMMEDIATE (the write lock)."""
    gym, people, cards = await _shop(client, 2)
    sent: list[bytes] = []
    if not ctx.settings.is_sqlite:
        import psycopg

        own = psycopg.Connection._exec_command

        def spy(self, command, *args, **kwargs):
            if threading.current_thread().name == "escrow-writer":
                sent.append(command if isinstance(command, bytes) else str(command).encode())
            return own(self, command, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "_exec_command", spy)
    r = await asyncio.gather(*[_ask(client, gym, card, key=f"k{i}") for i, card in enumerate(cards)])
    assert [x.status_code for x in r] == [201, 201]
    assert not [c for c in sent if c.startswith(b"BEGIN")]
    with ctx.engines.sync_writer.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        if not ctx.settings.is_sqlite:
            assert dbapi.autocommit is False
    assert (await get_card(client, people[0], cards[0]))["balance"]["units_held"] == 1


async def test_requests_that_arrive_while_a_batch_waits_for_the_head_join_it(client, ctx, monkeypatch):
    """A batch takes in what waits in the queue once it holds the ledger head (another replica's batch
    may have held it): those requests run as a second quick run and see the first run's writes."""
    gym, people, cards = await _shop(client, 2)
    x, y = cards
    writer = ctx.writer
    quick, careful, batches = writer.quick_batches, writer.careful_retries, writer.batches
    locked = threading.Event()
    gate = threading.Event()
    original = writer._lock_head

    async def slow_lock(conn, run, *rest):
        found = await original(conn, run, *rest)
        if run:  # the batch under test: it holds the head now; make it wait as if for another replica
            locked.set()
            gate.wait(10)
        return found

    monkeypatch.setattr(writer, "_lock_head", slow_lock)
    try:
        writer.gather(2)  # the first two in one batch
        first = [
            asyncio.ensure_future(_ask(client, gym, x, uses=3)),
            asyncio.ensure_future(_ask(client, gym, y, uses=1)),
        ]
        assert await asyncio.to_thread(locked.wait, 10)
        late = [
            asyncio.ensure_future(_ask(client, gym, x, uses=8)),  # 3 of x's 10 are held by the first run
            asyncio.ensure_future(_ask(client, gym, x, uses=7)),
            asyncio.ensure_future(_ask(client, gym, y, uses=2)),
        ]
        assert await asyncio.to_thread(writer.wait_queued, 3)  # they wait in the queue
    finally:
        gate.set()
    r = await asyncio.gather(*first, *late)
    monkeypatch.undo()
    assert [a.status_code for a in r] == [201, 201, 409, 201, 201]
    assert writer.batches - batches == 1  # all five in one batch …
    assert writer.quick_batches - quick == 1 and writer.careful_retries == careful  # … the quick way
    balances = [(await get_card(client, p, c))["balance"] for p, c in zip(people, cards)]
    assert [b["units_held"] for b in balances] == [10, 3]
    await _ledger_ok(ctx, held=sum(b["held"] for b in balances))


@pytest.mark.parametrize("key", [None, "after-a-restart"])  # with a key, the early key read finds it dead first
async def test_a_writer_connection_that_died_while_idle_costs_no_request(client, ctx, key):
    """The writer's pool does not ping (a round trip per batch): a batch whose first statement finds
    the connection dead (the database restarted, an idle timeout) runs again on a new one."""
    from sqlalchemy import event

    gym, people, cards = await _shop(client, 1)
    engine = ctx.engines.sync_writer
    killed = []

    def kill(dbapi_connection, record, proxy):
        if killed:
            return
        if ctx.settings.is_sqlite:
            dbapi_connection.close()
        else:  # what a database restart does to it: the server ends the session
            import psycopg

            pid = dbapi_connection.info.backend_pid
            with psycopg.connect(ctx.settings.effective_database_url.replace("+asyncpg", ""), autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        killed.append(True)

    reconnects = ctx.writer.reconnects
    event.listen(engine, "checkout", kill)
    try:
        r = await _ask(client, gym, cards[0], uses=2, key=key)
    finally:
        event.remove(engine, "checkout", kill)
    assert killed and r.status_code == 201, r.text
    assert ctx.writer.reconnects == reconnects + 1
    assert (await get_card(client, people[0], cards[0]))["balance"]["units_held"] == 2
    assert (await _ask(client, gym, cards[0], uses=1)).status_code == 201  # and the writer goes on


async def test_a_burst_larger_than_a_batch_is_answered_in_full(client, ctx, monkeypatch):
    """A batch takes at most `max_batch` requests; the rest stay queued for the next ones."""
    gym, people, cards = await _shop(client, 7)
    writer = ctx.writer
    monkeypatch.setattr(writer, "max_batch", 3)
    batches = writer.batches
    writer.gather(7)
    asks = [asyncio.ensure_future(_ask(client, gym, card, uses=1 + i)) for i, card in enumerate(cards)]
    r = await asyncio.wait_for(asyncio.gather(*asks), 20)
    assert [a.status_code for a in r] == [201] * 7
    assert writer.batches - batches == 3  # 3 + 3 + 1
    balances = [(await get_card(client, p, c))["balance"] for p, c in zip(people, cards)]
    assert [b["units_held"] for b in balances] == [1, 2, 3, 4, 5, 6, 7]
    await _ledger_ok(ctx, held=sum(b["held"] for b in balances))


async def test_a_batch_reads_its_idempotency_keys_together_and_each_key_has_one_effect(client, ctx, monkeypatch):
    """A quick run's keys come with its other reads (no key read on its own); a key used twice in one
    batch gives one effect and the first answer; another body under it is 409; keys are per caller.
    The retries that follow are answered before the ledger head is taken (no batch runs for them)."""
    from service.db import raw as raw_module

    gym, people, cards = await _shop(client, 3)
    a, b, c = cards
    pending_c = await ask(client, gym, c, uses=1)
    one_by_one = _reads_alone(monkeypatch, raw_module.KEY_SELECT)
    writer = ctx.writer
    quick, careful = writer.quick_batches, writer.careful_retries
    async with Held(ctx) as held:
        r = await held.release(
            [
                _ask(client, gym, a, uses=2, key="k1"),
                _ask(client, gym, a, uses=2, key="k1"),  # the same request again: the first answer
                _ask(client, gym, a, uses=3, key="k1"),  # another body under the key: 409
                _ask(client, gym, b, uses=1, key="k2"),
                _confirm(client, people[2], pending_c, key="k1"),  # the consumer's k1 is not the merchant's
                _confirm(client, people[2], pending_c, key="k1"),
            ]
        )
    assert [x.status_code for x in r] == [201, 201, 409, 201, 200, 200], [x.text for x in r]
    assert_error(r[2], 409, "idempotency_key_reused")
    assert r[0].json() == r[1].json() and r[1].headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in r[0].headers
    assert r[4].json() == r[5].json() and r[5].headers.get("idempotent-replayed") == "true"
    assert one_by_one == []  # every key was read with the run's prefetch
    assert writer.quick_batches == quick + 1 and writer.careful_retries == careful
    balances = [(await get_card(client, p, card))["balance"] for p, card in zip(people, cards)]
    assert [(x["units_held"], x["units_used"]) for x in balances] == [(2, 0), (1, 0), (0, 1)]

    batches, early = writer.batches, writer.early_replays
    writer.gather(3)
    again = await asyncio.gather(
        _ask(client, gym, a, uses=2, key="k1"),
        _ask(client, gym, a, uses=5, key="k1"),
        _confirm(client, people[2], pending_c, key="k1"),
    )
    assert [x.status_code for x in again] == [201, 409, 200]
    assert again[0].json() == r[0].json() and again[2].json() == r[4].json()
    assert again[0].headers.get("idempotent-replayed") == "true"
    assert writer.early_replays - early == 3 and writer.batches == batches  # no batch, no ledger head
    assert one_by_one == []
    after = [(await get_card(client, p, card))["balance"] for p, card in zip(people, cards)]
    assert after == balances
    await _ledger_ok(ctx, held=sum(x["held"] for x in after))


@pytest.mark.parametrize("key", [False, True], ids=["no key", "keys"])
async def test_a_quick_run_on_distinct_cards_reads_no_card_nor_redemption_on_its_own(client, ctx, monkeypatch, key):
    """Asks on distinct cards and confirms on distinct redemptions of other cards, in one batch: each
    operation's card or redemption comes from the run's one prefetch statement, none is read alone
    (a prefetch that files its rows under the wrong column reads every row twice, a round trip per
    request on PostgreSQL)."""
    from service.db import raw as raw_module

    gym, people, cards = await _shop(client, 4)
    pending = [await ask(client, gym, card, uses=1) for card in cards[2:]]
    alone = _reads_alone(monkeypatch, raw_module.CARD_AND_MERCHANT_SELECT, raw_module.RDM_AND_CARD_SELECT)
    writer = ctx.writer
    quick, careful = writer.quick_batches, writer.careful_retries
    async with Held(ctx) as held:
        r = await held.release(
            [
                _ask(client, gym, cards[0], uses=1, key="a0" if key else None),
                _confirm(client, people[2], pending[0], key="c2" if key else None),
                _ask(client, gym, cards[1], uses=2, key="a1" if key else None),
                _confirm(client, people[3], pending[1], key="c3" if key else None),
            ]
        )
    assert [x.status_code for x in r] == [201, 200, 201, 200], [x.text for x in r]
    assert alone == []
    assert writer.quick_batches == quick + 1 and writer.careful_retries == careful
    balances = [(await get_card(client, p, card))["balance"] for p, card in zip(people, cards)]
    assert [(x["units_held"], x["units_used"]) for x in balances] == [(1, 0), (2, 0), (0, 1), (0, 1)]
    await _ledger_ok(ctx, held=sum(x["held"] for x in balances))


async def test_a_stored_key_is_answered_while_another_connection_holds_the_ledger_head(client, ctx):
    gym, people, cards = await _shop(client, 1)
    first = await _ask(client, gym, cards[0], uses=2, key="retry-me")
    assert first.status_code == 201
    holder = ctx.engines.sync_reader.raw_connection()
    try:
        cur = holder.cursor()
        if ctx.settings.is_sqlite:
            cur.execute("BEGIN IMMEDIATE")  # SQLite's write lock: what every write batch takes first
        else:
            cur.execute("SELECT size FROM ledger_head WHERE id = 1 FOR UPDATE")
        retry = await asyncio.wait_for(_ask(client, gym, cards[0], uses=2, key="retry-me"), 20)
    finally:
        holder.rollback()
        holder.close()
    assert retry.status_code == 201 and retry.json() == first.json()
    assert retry.headers.get("idempotent-replayed") == "true"
    assert (await get_card(client, people[0], cards[0]))["balance"]["units_held"] == 2


async def test_a_quick_operation_may_not_use_sqlalchemy_nor_read_a_deferred_row_count(client, ctx):
    from sqlalchemy import text

    from service.db.raw import DeferredRowCount, QuickContractBroken

    gym, people, cards = await _shop(client, 1)
    card_id = cards[0]["id"]

    async def uses_sqlalchemy(tx):
        tx.conn.raw.run("UPDATE cards SET payment_reference = 'written by a broken op' WHERE id = ?", (card_id,))
        await tx.conn.execute(text("SELECT 1"))
        return "should not succeed"

    async def reads_a_row_count(tx):
        if tx.conn.raw.run("UPDATE cards SET payment_reference = 'counted' WHERE id = ?", (card_id,)) != 1:
            raise AssertionError("a guard that misread the count")
        return "should not succeed"

    with pytest.raises(QuickContractBroken):
        await ctx.writer.run(QuickOp(uses_sqlalchemy, Reads(card=card_id)))
    with pytest.raises(DeferredRowCount):
        await ctx.writer.run(QuickOp(reads_a_row_count, Reads(card=card_id)))

    async def careful(tx):  # the careful way has its row counts, and SQLAlchemy
        count = tx.conn.raw.run("UPDATE cards SET payment_reference = 'careful' WHERE id = ?", (card_id,))
        one = (await tx.conn.execute(text("SELECT 1"))).scalar()
        return count, one

    assert await ctx.writer.run(careful) == (1, 1)

    async def read(tx):
        return tx.conn.raw.one("SELECT payment_reference FROM cards WHERE id = ?", (card_id,))[0]

    assert await ctx.writer.run(read) == "careful"


async def test_a_batch_reads_its_keys_once_and_still_sees_a_key_stored_meanwhile(client, ctx, monkeypatch):
    """A keyed batch reads its Idempotency-Keys once: before it waits for the ledger head, and not again
    under it unless another connection may have stored one since (SQLite: PRAGMA data_version moved;
    PostgreSQL: the head was held by another batch). A key stored in between is then found, and its
    request answered from it: nothing is done twice."""
    from service.db import raw as raw_module

    gym, people, cards = await _shop(client, 2)
    key_reads = []
    original_query = raw_module.Raw._keys_query

    def counting_query(self, keys):
        key_reads.append(list(keys))
        return original_query(self, keys)

    monkeypatch.setattr(raw_module.Raw, "_keys_query", counting_query)
    writer = ctx.writer
    async with Held(ctx) as held:
        r = await held.release([_ask(client, gym, card, uses=1, key=f"once-{i}") for i, card in enumerate(cards)])
    assert [x.status_code for x in r] == [201, 201], [x.text for x in r]
    assert len(key_reads) == 1 and len(key_reads[0]) == 2, key_reads  # one statement, both keys

    # The same request under another key, which another connection stores (and commits) right after
    # this batch's early read: as if another replica had answered it meanwhile.
    first = await _ask(client, gym, cards[0], uses=2, key="first")
    assert first.status_code == 201
    with ctx.engines.sync_reader.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT caller, request_hash, status_code, response_body, created_at FROM idempotency_keys "
            "WHERE key = 'first'"
        ).one()
    holder = ctx.engines.sync_reader.raw_connection()
    cur = holder.cursor()
    if not ctx.settings.is_sqlite:
        cur.execute("SELECT size FROM ledger_head WHERE id = 1 FOR UPDATE")  # another replica's batch

    def store_meanwhile() -> None:
        marks = ("?" if ctx.settings.is_sqlite else "%s",) * 6
        cur.execute(
            "INSERT INTO idempotency_keys (caller, key, request_hash, status_code, response_body, created_at) "
            f"VALUES ({', '.join(marks)})",
            (stored[0], "second", *stored[1:]),
        )
        holder.commit()

    seen = {"early": 0}
    name = "stored_keys" if ctx.settings.is_sqlite else "found_keys"
    original_early = getattr(raw_module.Raw, name)

    def early_then_store(self, *args):
        out = original_early(self, *args)
        if not seen["early"]:
            seen["early"] = 1
            store_meanwhile()
        return out

    monkeypatch.setattr(raw_module.Raw, name, early_then_store)
    quick, careful = writer.quick_batches, writer.careful_retries
    key_reads.clear()
    try:
        second = await asyncio.wait_for(_ask(client, gym, cards[0], uses=2, key="second"), 20)
    finally:
        holder.rollback()
        holder.close()
    assert seen["early"] == 1
    assert second.status_code == 201 and second.json() == first.json(), second.text
    assert second.headers.get("idempotent-replayed") == "true"
    assert len(key_reads) == 2  # the early read, and again under the head
    assert writer.careful_retries == careful and writer.quick_batches == quick + 1
    assert (await get_card(client, people[0], cards[0]))["balance"]["units_held"] == 3  # 1, then 2 once
