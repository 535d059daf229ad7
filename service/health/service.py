"""Health codes (预付健康码) that follow events.

Every purchase, redemption, refund and complaint adds to its merchant's counters (a row per day,
and all-time totals on the health row) and re-assesses the merchant in the same transaction:
indicators come from at most a window's worth of daily rows, never a scan of cards. A change of
code raises an alert and a ledger entry; red publishes a warning at once; still red after the
grace period, the merchant is delisted (下架) automatically; a code that improves lifts the warning,
and only a regulator lifts a delisting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from risk import DEFAULT_POLICY, MerchantCounters, Policy, PolicyError, classify, compute_indicators, draw_inspections
from risk.counters import COUNTER_FIELDS
from risk.indicators import Indicators
from service.alerts import repository as alerts
from service.complaints import repository as complaints
from service.core.clock import iso
from service.core.ids import new_id
from service.db.writer import Tx
from service.event_log.service import emit
from service.health import repository
from service.http.errors import Unprocessable

COUNTERS = COUNTER_FIELDS  # the risk module names the counters; the daily rows keep one column each
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_of(dt: datetime) -> int:
    return (dt - EPOCH).days


class PolicyCache:
    """The current policy, re-read at most every few seconds so every replica follows a PUT soon."""

    ttl = 2.0

    def __init__(self) -> None:
        self.policy: Policy | None = None
        self.loaded = 0.0

    def forget(self) -> None:
        self.policy = None

    async def get(self, conn) -> Policy:
        if self.policy is not None and time.monotonic() - self.loaded < self.ttl:
            return self.policy
        body = await repository.latest_policy_body(conn)
        self.policy = Policy.from_dict(orjson.loads(body)) if body else DEFAULT_POLICY
        self.loaded = time.monotonic()
        return self.policy


policy_cache = PolicyCache()
alert_listeners: list = []  # callables run after a commit that raised alerts (long-poll wake-ups)


async def start_merchant(tx: Tx, merchant_id: str) -> None:
    policy = await policy_cache.get(tx.conn)
    empty = MerchantCounters.zero()
    ind = compute_indicators(empty, empty, 0, 0, 0, 0, prior_weeks=0)
    a = classify(ind, policy)
    await repository.add_health(
        tx.conn,
        dict(
            merchant_id=merchant_id,
            code=a.code,
            since=tx.now,
            red_since=None,
            warning_published_at=None,
            policy_version=a.policy_version,
            new_merchant=a.new_merchant,
            indicators=orjson.dumps(ind.to_dict()).decode(),
            reasons=orjson.dumps([r.to_dict() for r in a.reasons]).decode(),
            onboarded_day=day_of(tx.now),
            **{c: 0 for c in COUNTERS},
        ),
    )


async def record(tx: Tx, merchant_id: str, **deltas: int) -> None:
    """Note an event's counts for its merchant. They are written, and the merchant re-assessed, once
    per merchant at the end of the write batch, still inside the batch's transaction."""
    events = tx.batch_state.get("risk_events")
    if events is None:
        events = tx.batch_state["risk_events"] = []
        tx.before_flush.append(_apply_batch)
    events.append((merchant_id, deltas))


def record_consumer(tx: Tx, merchant_id: str, consumer_id: str, kind: str) -> None:
    """Note that a consumer refunded (`refund`) or rejected (`reject`) at a merchant today: the rates are
    judged by how many distinct consumers stand behind them (SPEC §3). Written with the batch's counters;
    always noted together with a `record` of the same event, which registers the batch hook."""
    tx.batch_state.setdefault("risk_consumers", []).append((merchant_id, kind, consumer_id))
    if "risk_events" not in tx.batch_state:
        tx.batch_state["risk_events"] = []
        tx.before_flush.append(_apply_batch)


async def _apply_batch(tx: Tx) -> None:
    per_merchant: dict[str, dict[str, int]] = {}
    blind: set[str] = set()  # merchants with an event whose effect is not in its counts
    for merchant_id, deltas in tx.batch_state.get("risk_events", []):
        acc = per_merchant.setdefault(merchant_id, {})
        counted_any = False
        for k, v in deltas.items():
            if v:
                acc[k] = acc.get(k, 0) + v
                counted_any = True
        if not counted_any or deltas.get("complaints"):
            blind.add(merchant_id)  # a complaint changed or was filed: the counted complaints need the tables
    day = day_of(tx.now)
    counted = [(m, day, *(values.get(c, 0) for c in COUNTERS)) for m, values in sorted(per_merchant.items()) if values]
    repository.add_daily_counts(tx.conn.raw, counted)
    consumers = sorted({(m, kind, day, c) for m, kind, c in tx.batch_state.get("risk_consumers", [])})
    if consumers:
        repository.add_consumer_days(tx.conn.raw, consumers)
        for m, _, _, _ in consumers:
            per_merchant.setdefault(m, {})
            blind.add(m)  # distinct consumers in the window: only the table knows
    # also adds the counts to the all-time counters
    await reassess_many(tx, per_merchant, by_counts=frozenset(m for m in per_merchant if m not in blind))


HealthRow = repository.HealthRow


async def _states(
    tx: Tx, merchant_ids: list[str], now: datetime, policy: Policy, pending: dict[str, dict[str, int] | None]
) -> dict[str, tuple]:
    """{merchant: (health row, delisted, merchant status, indicators)} for those with a health row.
    `pending` counts (today's daily rows already have them) are added to the all-time counters."""
    raw = tx.conn.raw
    today = day_of(now)
    window_start = today - policy.window_days  # rows with day > window_start
    recent_start = today - 7
    lowest = min(window_start, recent_start - 7 * policy.surge_weeks)
    first_instant = EPOCH + timedelta(days=window_start + 1)  # complaints filed on a day inside the window
    rows = repository.long_states(raw, policy, merchant_ids, now, first_instant, window_start, recent_start, lowest)
    n = len(repository.HEALTH_COLS) + 1
    k = len(COUNTERS)
    out = {}
    for row in rows:
        merchant_id = row[0]
        h = HealthRow(row[1], raw.pt(row[2]), raw.pt(row[3]), *row[4:n])
        delisted, status, overdue = bool(row[n]), row[n + 1], int(row[n + 2])
        complaints, refunders, rejecters = int(row[n + 3]), int(row[n + 4]), int(row[n + 5])
        w = row[n + 6 : -2]
        window = MerchantCounters(*map(int, w[:k]))  # fields in COUNTERS order (risk.counters asserts it)
        more = pending.get(merchant_id)
        if more:
            all_time = MerchantCounters(*[int(v) + more.get(c, 0) for c, v in zip(COUNTERS, row[5:n])])
        else:
            all_time = MerchantCounters(*map(int, row[5:n]))
        outstanding = all_time.issued - all_time.released - all_time.refunded
        ind = compute_indicators(
            window,
            all_time,
            int(w[k]),
            int(w[k + 1]),
            overdue,
            outstanding,
            prior_weeks=int(w[k + 2]),
            complaints=complaints,
            refund_consumers=refunders,
            rejection_consumers=rejecters,
        )
        out[merchant_id] = (h, delisted, status, ind, (row[-2], row[-1]))
    return out


# ---- the short way: a merchant's state from what this process last wrote for it -----------------------
#
# A re-assessment writes every figure it judged by into the merchant's row: the window's sums, the
# surge's inputs, the counted complaints and the distinct consumers are all in `indicators`, the
# all-time counts in their columns. So when the stored row is exactly what this process last wrote for
# the merchant, on the same day and under the same policy, that state is still the state of the tables,
# and a batch that only adds counts (issued, released, asks, …: nothing that needs the complaints or
# the consumers behind a refund or rejection) can add them to it: the window and the last 7 days gain
# today's counts, the weeks before them stay. What depends on the moment and not the day is read fresh
# (the overdue complaints), with the row, the merchant's state and nothing else.
#
# Why a stale entry can never be taken for a good one: every change to what a code is judged by comes
# with a re-assessment that writes the row (money events add counts, complaint changes re-assess, and
# `recompute` re-assesses or, writing without a writer, forgets every entry). A different row means
# another writer (a replica, a CLI) or a rolled-back batch: the long way. An entry is kept only when
# the row it expects differs from the row that was read, so a batch that is rolled back (its rows never
# stored) leaves an entry that no row matches. The entries are module state shared by every writer of
# the process, which is safe for the same reason: they are only ever used when the transaction's own
# rows agree with them.


@dataclass(frozen=True, slots=True)
class _Fresh:
    day: int
    policy: Policy
    row: HealthRow  # what the stored row holds after the write (counts included)
    indicators: str  # the stored `indicators` text
    policy_version: int
    ind: Indicators


_fresh: dict[str, _Fresh] = {}
_FRESH_MAX = 20_000  # entries kept at most (then they are all dropped: merchants seen again are read again)


def forget_fresh() -> None:
    """Drop every entry (the counters were rewritten without a re-assessment)."""
    _fresh.clear()


def _fresh_for(merchant_id: str, today: int, policy: Policy) -> _Fresh | None:
    f = _fresh.get(merchant_id)
    if f is None or f.day != today or (f.policy is not policy and f.policy != policy):
        return None
    return f


def _remember(merchant_id: str, today: int, policy: Policy, read: HealthRow, stored: tuple, fresh: _Fresh) -> None:
    """Keep what was just written for the merchant, unless it is what was read, `read` and `stored`
    (then a rolled-back batch could leave an entry that the old row matches): then drop any entry."""
    if fresh.row == read and (fresh.indicators, fresh.policy_version) == stored:
        _fresh.pop(merchant_id, None)
        return
    if len(_fresh) >= _FRESH_MAX:
        _fresh.clear()
    _fresh[merchant_id] = fresh


def _known_states(
    tx: Tx, merchant_ids: list[str], now: datetime, policy: Policy, pending: dict[str, dict[str, int] | None]
) -> dict[str, tuple]:
    """`_states` for merchants with an entry in `_fresh`, those whose stored row matches it: the
    entry's state plus `pending`, with the overdue complaints of now."""
    raw = tx.conn.raw
    n = len(repository.HEALTH_COLS) + 1
    today = day_of(now)
    out = {}
    for row in repository.known_states(raw, policy, merchant_ids, now):
        merchant_id = row[0]
        f = _fresh_for(merchant_id, today, policy)
        h = HealthRow(row[1], raw.pt(row[2]), raw.pt(row[3]), *row[4:n])
        stored = (row[n], row[n + 1])
        if f is None or h != f.row or stored != (f.indicators, f.policy_version):
            continue  # someone else wrote it, or our batch was rolled back: the long way
        more = pending.get(merchant_id) or {}
        was = f.ind
        window = MerchantCounters(
            was.window_issued + more.get("issued", 0),
            was.window_released + more.get("released", 0),
            was.window_refunded + more.get("refunded", 0),
            was.window_cards_sold + more.get("cards_sold", 0),
            was.window_redemptions_asked + more.get("redemptions_asked", 0),
            was.window_redemptions_rejected + more.get("redemptions_rejected", 0),
            was.complaints_filed + more.get("complaints", 0),
        )
        all_time = MerchantCounters(*[int(getattr(h, c)) + more.get(c, 0) for c in COUNTERS])
        ind = compute_indicators(
            window,
            all_time,
            was.last_7_days_issued + more.get("issued", 0),  # today is one of the last 7 days
            was.prior_weeks_issued,  # the weeks before them do not hold today
            int(row[n + 4]),
            all_time.issued - all_time.released - all_time.refunded,
            prior_weeks=was.prior_weeks,
            complaints=was.complaints,
            refund_consumers=was.refund_consumers,
            rejection_consumers=was.rejection_consumers,
        )
        out[merchant_id] = (h, bool(row[n + 2]), row[n + 3], ind, stored)
    return out


async def create_alert(tx: Tx, merchant_id: str, kind: str, from_code, to_code, reasons: list, seq: int) -> None:
    alert = {
        "id": new_id("alt"),
        "merchant_id": merchant_id,
        "kind": kind,
        "from_code": from_code,
        "to_code": to_code,
        "reasons": reasons,
        "status": "open",
    }
    await alerts.add(tx.conn, {**alert, "created_at": tx.now, "ledger_seq": seq})
    for listener in alert_listeners:
        tx.after_commit.append(listener)
    # Regulators' business: no merchant_id given, so the merchant's own feed does not carry it.
    answer = {"finding": None, "created_at": iso(tx.now), "acknowledged_at": None, "resolved_at": None}
    emit(tx, "alert.created", {**alert, **answer, "ledger_seq": seq}, ledger_seq=seq)


async def regulatory_alert(tx: Tx, merchant_id: str, kind: str, seq: int) -> None:
    """A regulatory act that changes no code still reaches the regulators' feed (SPEC §9)."""
    await create_alert(tx, merchant_id, kind, None, None, [], seq)


async def reassess(tx: Tx, merchant_id: str, pending: dict[str, int] | None = None) -> str:
    """Classify the merchant afresh and apply what a change of code brings. `pending` are counts of this
    batch not yet in the all-time counters (today's daily row already has them); they are added here."""
    return (await reassess_many(tx, {merchant_id: pending})).get(merchant_id, "green")


async def reassess_many(
    tx: Tx, pending: dict[str, dict[str, int] | None], by_counts: frozenset[str] = frozenset()
) -> dict[str, str]:
    """`reassess` for several merchants at once: one statement reads them all, one writes every merchant
    whose code stays; a change of code is applied merchant by merchant. Returns each merchant's code.

    `by_counts` are merchants whose only news in `pending` are counts (no complaint, no consumer behind a
    refund or rejection): each of them whose stored row is the one this process last wrote for it, today
    and under the same policy (`_fresh`), is re-assessed from that state plus the counts, with a short
    read (`_known_states`) instead of the window's sums; the others as always (`_states`)."""
    if not pending:
        return {}
    conn = tx.conn
    policy = await policy_cache.get(conn)
    today = day_of(tx.now)
    states: dict[str, tuple] = {}
    known = [m for m in by_counts if _fresh_for(m, today, policy) is not None]
    if known:
        states = _known_states(tx, sorted(known), tx.now, policy, pending)
    rest = [m for m in pending if m not in states]
    if rest:
        states.update(await _states(tx, sorted(rest), tx.now, policy, pending))
    same: list[tuple] = []
    codes: dict[str, str] = {}
    for merchant_id in sorted(states):
        h, delisted, merchant_status, ind, stored = states[merchant_id]
        more = pending.get(merchant_id) or {}
        a = classify(ind, policy)
        codes[merchant_id] = a.code
        reasons = [r.to_dict() for r in a.reasons]
        indicators = orjson.dumps(ind).decode()  # a dataclass: its fields in order, as to_dict() gives them
        after = h._replace(**{c: getattr(h, c) + v for c, v in more.items() if v})
        if a.code == h.code:
            same.append(
                (
                    indicators,
                    orjson.dumps(reasons).decode(),
                    a.policy_version,
                    bool(a.new_merchant),
                    *(more.get(c, 0) for c in COUNTERS),
                    merchant_id,
                )
            )
            red_since = h.red_since
        else:
            red_since, warned = await _code_changed(tx, merchant_id, h, a, reasons, indicators, more)
            after = after._replace(code=a.code, red_since=red_since, warning_published_at=warned)
        _remember(
            merchant_id, today, policy, h, stored, _Fresh(today, policy, after, indicators, a.policy_version, ind)
        )
        if (
            a.code == "red"
            and red_since is not None
            and not delisted
            and merchant_status == "active"
            and tx.now >= red_since + timedelta(days=policy.grace_days)
        ):
            seq = tx.append("delisted", merchant_id=merchant_id, actor="health_code", grace_days=policy.grace_days)
            await repository.set_delisted(conn, merchant_id)
            await create_alert(tx, merchant_id, "delisted", "red", "red", reasons, seq)
            emit(
                tx,
                "merchant.delisted",
                {"merchant_id": merchant_id, "delisted": True, "actor": "health_code", "reasons": reasons},
                merchant_id=merchant_id,
                ledger_seq=seq,
            )
    repository.keep_code(conn.raw, same)
    return codes


async def _code_changed(
    tx: Tx, merchant_id: str, h: HealthRow, a, reasons: list, indicators: str, more: dict[str, int]
) -> tuple[datetime | None, datetime | None]:
    """A new code: its ledger entry and alert; red publishes the warning, leaving red lifts it. Stores
    the new figures; returns the merchant's red_since and warning_published_at afterwards."""
    conn = tx.conn
    values = dict(
        indicators=indicators,
        reasons=orjson.dumps(reasons).decode(),
        policy_version=a.policy_version,
        new_merchant=a.new_merchant,
        code=a.code,
        since=tx.now,
    )
    red_since, warned = h.red_since, h.warning_published_at
    seq = tx.append(
        "health_code",
        merchant_id=merchant_id,
        from_code=h.code,
        to_code=a.code,
        policy_version=a.policy_version,
        reasons=reasons,
    )
    await create_alert(tx, merchant_id, "code_change", h.code, a.code, reasons, seq)
    emit(
        tx,
        "merchant.health_changed",
        {
            "merchant_id": merchant_id,
            "code": a.code,
            "from_code": h.code,
            "reasons": reasons,
            "policy_version": a.policy_version,
        },
        merchant_id=merchant_id,
        ledger_seq=seq,
    )
    if a.code == "red":
        red_since = tx.now
        values["red_since"] = red_since
        if h.warning_published_at is None:
            warn_seq = tx.append("warning_published", merchant_id=merchant_id)
            emit(
                tx,
                "merchant.warned",
                {"merchant_id": merchant_id, "code": a.code, "reasons": reasons},
                merchant_id=merchant_id,
                ledger_seq=warn_seq,
            )
            values["warning_published_at"] = warned = tx.now
            await repository.set_warned(conn, merchant_id, tx.now)
    elif h.code == "red":
        red_since = None
        values["red_since"] = None
        if h.warning_published_at is not None:
            tx.append("warning_lifted", merchant_id=merchant_id)
            values["warning_published_at"] = warned = None
            await repository.set_warned(conn, merchant_id, None)
        # A delisting stays: only a regulator lifts one (SPEC §3), whether the grace period or a
        # regulator imposed it; the code cannot tell which, and must not undo a regulator's act.
    await repository.change_health(conn, merchant_id, values, more)
    return red_since, warned


async def restart_grace(tx: Tx, merchant_id: str) -> None:
    """A regulator lifted a delisting: a still-red merchant gets a fresh grace period."""
    await repository.restart_grace(tx.conn, merchant_id, tx.now)


async def sweep(tx: Tx, limit: int = 200) -> int:
    """Complaints that became overdue, and red merchants past their grace, are re-assessed; and once a
    day every merchant, a chunk at a time (`_daily_reassessment`)."""
    merchants: set[str] = set()
    rows = await complaints.newly_overdue(tx.conn, tx.now, limit)
    for r in rows:
        merchants.add(r.merchant_id)
        await _complaint_overdue(tx, await complaints.change(tx.conn, r.id, overdue=True))
    policy = await policy_cache.get(tx.conn)
    due = await repository.red_past_grace(tx.conn, tx.now - timedelta(days=policy.grace_days), limit)
    merchants.update(due)
    await reassess_many(tx, {m: None for m in merchants})
    return len(rows) + len(due) + await _daily_reassessment(tx, limit)


async def _complaint_overdue(tx: Tx, c) -> None:
    """Its ledger entry (a regulatory fact), the regulators' alert and the event."""
    from service.complaints.service import complaint_out

    seq = tx.append("complaint_overdue", merchant_id=c.merchant_id, complaint_id=c.id)
    await create_alert(tx, c.merchant_id, "complaint_overdue", None, None, [], seq)
    emit(
        tx,
        "complaint.overdue",
        complaint_out(c, tx.now),
        merchant_id=c.merchant_id,
        consumer_id=c.consumer_id,
        ledger_seq=seq,
    )


DAILY_KEY = "risk_daily_reassessment"  # app_state: "<day> done" or "<day> after <merchant id>"


async def _daily_reassessment(tx: Tx, limit: int) -> int:
    """Re-assess the next `limit` merchants not yet re-assessed today; 0 once all have been.

    Codes follow events, but the rolling window also moves by itself: a day later, refunds or a
    surge may have left it while the merchant had no event. Each UTC day (of the service clock) every
    merchant is re-assessed once, in merchant-id order; the progress is kept in `app_state` inside
    the same write, so replicas share the work instead of repeating it."""
    raw = tx.conn.raw
    today = str(day_of(tx.now))
    progress = repository.state_value(raw, DAILY_KEY)
    day, _, state = progress.partition(" ") if progress else ("", "", "")
    if day == today and state == "done":
        return 0
    after = state[len("after ") :] if day == today and state.startswith("after ") else ""
    ids = repository.merchant_ids_after(raw, after, limit)
    await reassess_many(tx, {m: None for m in ids})
    value = f"{today} after {ids[-1]}" if len(ids) == limit else f"{today} done"
    repository.set_state_value(raw, DAILY_KEY, value)
    return len(ids)


async def reassess_all(writer, chunk: int = 200) -> int:
    """Re-assess every merchant (after a policy change or a test-clock move)."""
    after, n = "", 0
    while True:

        async def op(tx, after=after):
            ids = repository.merchant_ids_after(tx.conn.raw, after, chunk)
            await reassess_many(tx, {m: None for m in ids})
            return ids

        ids = await writer.run(op)
        n += len(ids)
        if len(ids) < chunk:
            return n
        after = ids[-1]


def health_out(h, delisted: bool) -> dict:
    return {
        "merchant_id": h.merchant_id,
        "code": h.code,
        "since": iso(h.since),
        "warning": {"published_at": iso(h.warning_published_at)} if h.warning_published_at else None,
        "delisted": delisted,
        "indicators": orjson.loads(h.indicators),
        "reasons": orjson.loads(h.reasons),
        "policy_version": h.policy_version,
        "new_merchant": h.new_merchant,
        "notes": ["new_merchant"] if h.new_merchant else [],
    }


async def current_policy(conn) -> Policy:
    """The newest policy version, read afresh (not the cached one)."""
    policy_cache.forget()
    return await policy_cache.get(conn)


async def publish_policy(tx: Tx, changes: dict) -> dict:
    """A new policy version: the current one with `changes` (a `version` in them is ignored)."""
    current = await current_policy(tx.conn)
    changes = {k: v for k, v in changes.items() if k != "version"}
    try:
        new = Policy.from_dict({**changes, "version": current.version + 1}, base=current)
    except PolicyError as exc:
        raise Unprocessable(str(exc), "invalid_policy") from exc
    await repository.add_policy(tx, new.version, new.to_dict())
    return new.to_dict()


async def draw(tx: Tx, inspectors: list[str], seed: str) -> dict:
    """Draw merchants to inspect (worse codes at higher ratios) and assign them random inspectors; the
    answer publishes the seed and the population, so anyone can repeat the draw."""
    policy = await current_policy(tx.conn)
    population = await repository.draw_population(tx.conn)
    try:
        pairs = draw_inspections(population, inspectors, policy, seed)
    except ValueError as exc:
        raise Unprocessable(str(exc), "invalid_draw") from exc
    draw_id = new_id("drw")
    out = {
        "seed": seed,
        "policy_version": policy.version,
        "drawn_at": iso(tx.now),
        "ratios_bp": policy.inspection_ratios.to_dict(),
        "inspectors": inspectors,
        "population": [{"merchant_id": m, "code": c} for m, c in population],
        "inspections": [{"merchant_id": m, "inspector": i} for m, i in pairs],
    }
    await repository.add_draw(tx, draw_id, seed, out)
    tx.append("inspection_draw", draw_id=draw_id, seed=seed, drawn=len(pairs))
    return {"id": draw_id, **out}
