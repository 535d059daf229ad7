"""Money is conserved under any sequence of buys, asks, answers, expiries, refunds and defaults:
after every step, paid in = escrow + released + refunded, no card is over-committed, every release
is the cumulative floor of SPEC §2, and the ledger verifies against the card balances."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from api_tests.conftest import reset_database
from api_tests.factories import (
    OP,
    buy_card,
    create_auditor,
    create_merchant,
    move_clock_to,
    parse_time,
    publish_count,
    publish_period,
    publish_stored_value,
    register_consumer,
)
from service.ledger_api.service import verify_ledger


def cum(units: int, price: int, total: int) -> int:
    return units * price // total


class EscrowWorld:
    """Two merchants with one product of each type, three consumers, and a model of what moved."""

    def __init__(self, client, ctx):
        self.client, self.ctx = client, ctx
        self.cards: dict[str, dict] = {}  # card id → {card, consumer, merchant, released, refunded}
        self.redemptions: list[dict] = []  # {id, card_id, units, status}
        self.defaulted: set[str] = set()

    async def setup(self) -> None:
        await reset_database(self.ctx)
        c = self.client
        self.bank = await create_auditor(c)
        self.merchants = [await create_merchant(c, f"Shop {i}") for i in range(2)]
        self.products = []
        for m in self.merchants:
            self.products += [
                (m, await publish_stored_value(c, m, price=1000, face_value=3333)),
                (m, await publish_count(c, m, price=1000, uses=4, bonus_uses=1)),
                (m, await publish_period(c, m, price=900, periods=3, period_days=7, valid_days=40)),
            ]
        self.consumers = [await register_consumer(c, f"Consumer {i}") for i in range(3)]
        self.now = None

    async def read(self, card_id: str) -> dict:
        r = await self.client.get(f"/v1/cards/{card_id}", headers=self.bank["headers"])
        assert r.status_code == 200, r.text
        return r.json()

    async def buy(self, consumer_i: int, product_i: int) -> None:
        merchant, product = self.products[product_i % len(self.products)]
        consumer = self.consumers[consumer_i % len(self.consumers)]
        if merchant["id"] in self.defaulted:
            r = await self.client.post(
                "/v1/cards",
                json={"product_id": product["id"], "payment": {"method": "alipay", "reference": "x"}},
                headers=consumer["headers"],
            )
            assert r.status_code == 409 and r.json()["error"]["code"] == "merchant_not_selling", r.text
            return
        card = await buy_card(self.client, consumer, product)
        assert card["balance"]["escrow"] == product["price"]
        self.cards[card["id"]] = {
            "card": card,
            "consumer": consumer,
            "merchant": merchant,
            "released": 0,
            "refunded": 0,
        }
        if self.now is None:
            self.now = parse_time(card["purchased_at"])

    def pick_card(self, i: int) -> dict:
        return self.cards[list(self.cards)[i % len(self.cards)]]

    async def ask(self, card_i: int, units_wanted: int) -> None:
        entry = self.pick_card(card_i)
        before = await self.read(entry["card"]["id"])
        b = before["balance"]
        unit = {"stored_value": "amount", "count": "uses", "period": "periods"}[before["type"]]
        committed = b["units_used"] + b["units_held"]
        limit = b["units_total"]
        if before["type"] == "period":
            limit = min(limit, (self.clock_now() - parse_time(before["purchased_at"])) // timedelta(days=7))
        fit = max(1, limit - committed)
        # Mostly asks that fit, often the whole rest, sometimes one unit too many or anything at all.
        units = [1, max(1, fit // 3), fit, fit, fit + 1, 1 + units_wanted % b["units_total"]][units_wanted % 6]
        r = await self.client.post(
            f"/v1/cards/{before['id']}/redemptions", json={unit: units}, headers=entry["merchant"]["headers"]
        )
        allowed = (
            before["status"] == "active"
            and entry["merchant"]["id"] not in self.defaulted
            and committed + units <= limit
        )
        if not allowed:
            assert r.status_code == 409, r.text
            return
        assert r.status_code == 201, r.text
        price, total = before["price"], b["units_total"]
        assert r.json()["hold_amount"] == cum(committed + units, price, total) - cum(committed, price, total)
        self.redemptions.append({"id": r.json()["id"], "card_id": before["id"], "units": units, "status": "pending"})

    def clock_now(self) -> datetime:
        return self.ctx.clock.now()

    async def answer(self, rdm_i: int, action: str) -> None:
        pending = [r for r in self.redemptions if r["status"] == "pending"]
        choices = pending if pending and rdm_i % 4 else self.redemptions  # mostly answer a live ask
        rdm = choices[rdm_i % len(choices)]
        entry = self.cards[rdm["card_id"]]
        party = entry["merchant"] if action == "cancel" else entry["consumer"]
        before = await self.read(rdm["card_id"])
        live = (await self.client.get(f"/v1/redemptions/{rdm['id']}", headers=party["headers"])).json()
        rdm["status"] = live["status"]
        r = await self.client.post(f"/v1/redemptions/{rdm['id']}/{action}", headers=party["headers"])
        if rdm["status"] != "pending":
            assert r.status_code == 409, r.text
            return
        assert r.status_code == 200, r.text
        rdm["status"] = r.json()["status"]
        if action == "confirm":
            used, price, total = before["balance"]["units_used"], before["price"], before["balance"]["units_total"]
            expected = cum(used + rdm["units"], price, total) - cum(used, price, total)
            assert r.json()["release_amount"] == expected
            entry["released"] += expected

    async def advance(self, minutes: int) -> None:
        if self.now is None:
            return
        self.now = max(self.now, self.clock_now()) + timedelta(minutes=minutes)
        await move_clock_to(self.client, self.now)
        await self.absorb_refunds()

    async def absorb_refunds(self) -> None:
        """Cards the sweeper or a default refunded: everything left in escrow went back."""
        for card_id, entry in self.cards.items():
            if entry["refunded"] or entry.get("ended"):
                continue
            card = await self.read(card_id)
            if card["status"] == "refunded":
                assert card["refund_rule"] in ("expiry", "merchant_default")
                entry["refunded"] = card["price"] - entry["released"]
                entry["ended"] = True

    async def refund(self, card_i: int) -> None:
        entry = self.pick_card(card_i)
        before = await self.read(entry["card"]["id"])
        r = await self.client.post(f"/v1/cards/{before['id']}/refund", headers=entry["consumer"]["headers"])
        if before["status"] == "refunded":
            assert r.status_code == 409, r.text
            return
        if before["status"] == "exhausted" and r.status_code == 409:
            return
        assert r.status_code == 200, r.text
        b = before["balance"]
        if self.clock_now() < parse_time(before["cooling_off_ends_at"]) and b["units_used"] == 0:
            rule, amount = "cooling_off", before["price"]
        else:
            rule = "consumer_quit"
            amount = max(0, min(b["escrow"], before["price"] - b["units_used"] * before["list_price"]))
        got = r.json()
        assert (got["rule"], got["amount"], got["merchant_share"]) == (rule, amount, b["escrow"] - amount)
        entry["refunded"] = amount
        entry["released"] += b["escrow"] - amount
        entry["ended"] = True

    async def default(self, merchant_i: int) -> None:
        merchant = self.merchants[merchant_i % len(self.merchants)]
        r = await self.client.post(f"/v1/merchants/{merchant['id']}/default", json={"reason": "gone"}, headers=OP)
        if merchant["id"] in self.defaulted:
            assert r.status_code == 409, r.text
            return
        assert r.status_code == 200, r.text
        self.defaulted.add(merchant["id"])
        await self.absorb_refunds()

    async def check(self) -> None:
        paid_in = held_total = 0
        outstanding = released = refunded = 0
        for card_id, entry in self.cards.items():
            card = await self.read(card_id)
            b, price = card["balance"], card["price"]
            assert b["escrow"] + b["released"] + b["refunded"] == price
            assert 0 <= b["held"] <= b["escrow"] and b["available"] == b["escrow"] - b["held"]
            assert (
                0 <= b["units_used"] and 0 <= b["units_held"] and b["units_used"] + b["units_held"] <= b["units_total"]
            )
            assert (b["released"], b["refunded"]) == (entry["released"], entry["refunded"]), (card_id, b, entry)
            if card["status"] != "refunded":
                assert b["released"] == cum(b["units_used"], price, b["units_total"])
                assert b["held"] == cum(b["units_used"] + b["units_held"], price, b["units_total"]) - b["released"]
            else:
                assert (b["escrow"], b["held"], b["units_held"]) == (0, 0, 0)
            assert (card["status"] == "exhausted") == (
                card["status"] != "refunded" and b["units_used"] == b["units_total"]
            )
            paid_in += price
            outstanding, released, refunded = (
                outstanding + b["escrow"],
                released + b["released"],
                refunded + b["refunded"],
            )
            held_total += b["held"]
        assert paid_in == outstanding + released + refunded
        report = await verify_ledger(self.ctx.engines.reader)
        assert report["ok"] is True, report
        if self.cards:
            totals = report["ledger_totals"]
            assert (totals["paid_in"], totals["released"], totals["refunded"], totals["held"]) == (
                paid_in,
                released,
                refunded,
                held_total,
            )


OPERATIONS = (
    ("buy",) * 2
    + ("ask",) * 5
    + ("confirm",) * 4
    + ("reject", "cancel", "expire", "period", "period", "refund", "refund", "default")
)


async def random_step(world: EscrowWorld, rng: random.Random) -> str:
    op = rng.choice(OPERATIONS)
    if op == "buy" or len(world.cards) < 3:
        await world.buy(rng.randrange(9), rng.randrange(99))
        return "buy"
    if op == "ask":
        await world.ask(rng.randrange(99), rng.randrange(7000))
    elif op in ("confirm", "reject", "cancel") and world.redemptions:
        await world.answer(rng.randrange(99), op)
    elif op == "expire":
        await world.advance(16)
    elif op == "period":
        await world.advance(rng.choice([60 * 24, 60 * 24 * 7 + 1]))
    elif op == "refund":
        await world.refund(rng.randrange(99))
    elif op == "default" and rng.random() < 0.15:
        await world.default(rng.randrange(2))
    return op


@pytest.mark.parametrize("seed", range(10))
async def test_money_is_conserved_over_random_sequences(client, ctx, seed):
    rng = random.Random(seed)
    world = EscrowWorld(client, ctx)
    await world.setup()
    for _ in range(30):
        await random_step(world, rng)
        await world.check()


@pytest.fixture(scope="session")
async def session_loop():
    return asyncio.get_running_loop()


def test_money_is_conserved_under_any_sequence_hypothesis(client, ctx, session_loop):
    """The same properties, driven by a hypothesis state machine; each rule runs on the session loop
    (this test is synchronous, so that loop is idle while hypothesis drives it)."""
    run = session_loop.run_until_complete

    class EscrowMachine(RuleBasedStateMachine):
        @initialize()
        def start(self):
            self.world = EscrowWorld(client, ctx)
            run(self.world.setup())

        @rule(consumer=st.integers(0, 8), product=st.integers(0, 99))
        def buy(self, consumer, product):
            run(self.world.buy(consumer, product))

        @precondition(lambda self: self.world.cards)
        @rule(card=st.integers(0, 99), units=st.integers(0, 7000))
        def ask(self, card, units):
            run(self.world.ask(card, units))

        @precondition(lambda self: self.world.redemptions)
        @rule(rdm=st.integers(0, 99), action=st.sampled_from(["confirm", "confirm", "reject", "cancel"]))
        def answer(self, rdm, action):
            run(self.world.answer(rdm, action))

        @rule(minutes=st.sampled_from([16, 60 * 24, 60 * 24 * 7 + 1]))
        def time_passes(self, minutes):
            run(self.world.advance(minutes))

        @precondition(lambda self: self.world.cards)
        @rule(card=st.integers(0, 99))
        def refund(self, card):
            run(self.world.refund(card))

        @rule(merchant=st.integers(0, 1))
        def default(self, merchant):
            run(self.world.default(merchant))

        @invariant()
        def money_is_conserved_and_the_ledger_verifies(self):
            run(self.world.check())

    run_state_machine_as_test(
        EscrowMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
