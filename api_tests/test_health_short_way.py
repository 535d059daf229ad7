"""The short way of re-assessing a health code (service/health/service.py `_known_states`: the state this
process last wrote, plus the batch's counts) gives exactly what the long way (the window's sums read
from the tables) gives. One random story is told twice over HTTP from the same seed: once as served,
once with the short way switched off; every merchant's health after every step, every answer's status
and the ledger's entry kinds must be the same. The story has purchases, confirmed and rejected asks,
refunds, complaints (with and without a card), answers and dismissals, clock moves across days and
past complaint deadlines, a policy change, and writes through a second replica that keeps its own
entries (as another process would), so the first one's entries go stale under it.

The seed is printed on failure; `HEALTH_STORY_SEED=<n>` replays it."""

from __future__ import annotations

import os
import random
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from api_tests.conftest import reset_database
from api_tests.factories import (
    OP,
    create_merchant,
    create_regulator,
    file_complaint,
    move_clock_to,
    publish_count,
    put_policy,
    register_consumer,
)
from api_tests.test_phone_verification import second_instance
from service.health import service as health_service

STEPS = 140
POLICY = {  # low bars, so the story's few merchants change code, go red and come back
    "min_cards": 2,
    "min_refund_consumers": 1,
    "min_rejection_consumers": 2,
    "min_complaint_consumers": 1,
    "refund_rate": {"yellow": 800, "red": 2_500},
    "rejection_rate": {"yellow": 1_500, "red": 4_000},
    "complaints": {"yellow": 2, "red": 4},
    "overdue_complaints": {"yellow": 1, "red": 2},
}


async def _snapshot(client, merchants: list[dict]) -> list[tuple]:
    out = []
    for m in merchants:
        h = (await client.get(f"/v1/merchants/{m['id']}/health")).json()
        out.append(
            (h["code"], h["indicators"], h["reasons"], h["policy_version"], h["new_merchant"], h["delisted"])
            + (h["warning"] is None,)
        )
    return out


async def _tell(client, data_dir, seed: int, start: datetime) -> tuple[list, list[str]]:
    """The story of `seed`: what every merchant's health was after every step, and the ledger's kinds."""
    rng = random.Random(seed)
    await move_clock_to(client, start)
    now = start
    await put_policy(client, POLICY)
    regulator = await create_regulator(client)
    merchants = [await create_merchant(client, name=f"Gym {i}") for i in range(3)]
    products = [await publish_count(client, m, price=10_000 + 1_000 * i, uses=10) for i, m in enumerate(merchants)]
    consumers = [await register_consumer(client, name=f"Consumer {i}") for i in range(5)]
    cards: list[tuple[int, int, dict]] = []  # (consumer, merchant, card)
    complaints: list[tuple[int, dict]] = []  # (merchant, complaint)
    steps: list = []
    own_entries: dict = {}  # the replica's own short-way entries, as another process would keep them
    async with second_instance(data_dir) as replica:
        for step in range(STEPS):
            via_replica = rng.random() < 0.2
            c = replica if via_replica else client
            action = rng.choices(
                ["buy", "redeem", "reject", "refund", "complain", "respond", "dismiss", "clock", "policy"],
                [5, 12, 3, 2, 3, 1, 1, 3, 0.3],
            )[0]
            if via_replica:
                own_entries, health_service._fresh = health_service._fresh, own_entries
            try:
                status = await _act(c, rng, action, regulator, merchants, products, consumers, cards, complaints)
            finally:
                if via_replica:
                    own_entries, health_service._fresh = health_service._fresh, own_entries
            if action == "clock":
                now += timedelta(hours=rng.choice([1, 5, 11, 23, 49]), minutes=7)
                await move_clock_to(client, now)
            steps.append((step, action, via_replica, status, await _snapshot(client, merchants)))
    async with client._transport.app.fastapi_app.state.ctx.engines.reader.connect() as conn:
        kinds = [r[0] for r in (await conn.execute(text("SELECT kind FROM ledger_entries ORDER BY seq"))).all()]
    return steps, kinds


async def _act(c, rng, action, regulator, merchants, products, consumers, cards, complaints) -> int | None:
    if action == "buy" or (action in ("redeem", "reject", "refund") and not cards):
        who, m = rng.randrange(len(consumers)), rng.randrange(len(merchants))
        r = await c.post(
            "/v1/cards",
            json={
                "product_id": products[m]["id"],
                "payment": {"method": "wechat_pay", "reference": f"wx-{rng.getrandbits(64):x}"},
            },
            headers=consumers[who]["headers"],
        )
        if r.status_code == 201:
            cards.append((who, m, r.json()))
        else:  # a merchant red for the grace period was delisted (下架) by its code: it sells no more
            assert r.json()["error"]["code"] == "merchant_not_selling", r.text
        return r.status_code
    if action in ("redeem", "reject"):
        who, m, card = rng.choice(cards)
        r = await c.post(f"/v1/cards/{card['id']}/redemptions", json={"uses": 1}, headers=merchants[m]["headers"])
        if r.status_code != 201:
            return r.status_code
        verb = "confirm" if action == "redeem" else "reject"
        r = await c.post(f"/v1/redemptions/{r.json()['id']}/{verb}", headers=consumers[who]["headers"])
        return r.status_code
    if action == "refund":
        who, m, card = rng.choice(cards)
        return (await c.post(f"/v1/cards/{card['id']}/refund", headers=consumers[who]["headers"])).status_code
    if action == "complain":
        who, m = rng.randrange(len(consumers)), rng.randrange(len(merchants))
        mine = [card for w, k, card in cards if w == who and k == m]
        card = mine[0] if mine and rng.random() < 0.7 else None
        complaints.append((m, await file_complaint(c, consumers[who], merchants[m], card)))
        return 201
    if action == "respond" and complaints:
        m, complaint = rng.choice(complaints)
        r = await c.post(
            f"/v1/complaints/{complaint['id']}/response",
            json={"text": "We are sorry."},
            headers=merchants[m]["headers"],
        )
        return r.status_code
    if action == "dismiss" and complaints:
        m, complaint = rng.choice(complaints)
        body = {"resolution": rng.choice(["dismissed", "upheld"])}
        r = await c.post(f"/v1/complaints/{complaint['id']}/resolution", json=body, headers=regulator["headers"])
        return r.status_code
    if action == "policy":
        r = await c.put("/v1/risk/policy", json={"min_cards": rng.choice([1, 2, 3])}, headers=OP)
        return r.status_code
    return None


async def test_the_short_way_gives_the_codes_of_the_long_way(client, ctx, data_dir, monkeypatch):
    seed = int(os.environ.get("HEALTH_STORY_SEED") or secrets.randbits(32))
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=20, minute=0, second=0, microsecond=0)
    taken: list[int] = []
    known_states = health_service._known_states

    def counted(*args, **kwargs):
        out = known_states(*args, **kwargs)
        taken.append(len(out))
        return out

    monkeypatch.setattr(health_service, "_known_states", counted)
    monkeypatch.setattr(health_service, "_fresh", {})
    print(f"story seed {seed} (rerun with HEALTH_STORY_SEED={seed})")  # shown with a failure
    short, short_kinds = await _tell(client, data_dir, seed, start)
    short_taken = sum(taken)

    await reset_database(ctx)
    monkeypatch.setattr(health_service, "_fresh_for", lambda *args: None)  # the long way only
    taken.clear()
    long, long_kinds = await _tell(client, data_dir, seed, start)

    assert short_taken > 0, f"seed {seed}: the short way was never taken"
    assert sum(taken) == 0
    for a, b in zip(short, long):
        assert a == b, f"seed {seed}: step {a[0]} ({a[1]}{' via the replica' if a[2] else ''}) differs"
    assert len(short) == len(long) == STEPS
    assert short_kinds == long_kinds, f"seed {seed}: the ledgers differ"
