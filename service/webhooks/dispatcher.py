"""The webhook dispatcher: turns the event log into deliveries and sends them (Standard Webhooks).

Every replica runs one. A step, in one transaction: record the results of the sends that finished,
fan out new events (each enabled endpoint has a cursor into the events table; a delivery row per
event the endpoint may see and asked for), and claim due deliveries for a lease. On PostgreSQL the
endpoints and deliveries are taken with `FOR UPDATE SKIP LOCKED`, so replicas share the work
without sending one delivery twice at once; on SQLite the step runs through the writer, under its
one write lock. Sends run outside any transaction, as tasks bounded per endpoint and in total, so
a slow or dead receiver holds only its own slots; the money path never waits for any of this.
Every statement of a step is in repository.py (and the events' in service/event_log/repository.py).

At least once: a delivery leaves `pending` only when a 2xx answer is recorded; a replica that dies
mid-send leaves its lease to run out, and another replica sends again with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson

from service.core.clock import iso
from service.core.ids import new_id
from service.db.writer import Tx
from service.event_log import repository as event_repo
from service.event_log.service import emit, new_events
from service.http.context import AppContext
from service.webhooks import repository, ssrf
from service.webhooks.service import endpoint_out
from service.webhooks.signing import signature_header
from service.webhooks.transport import LeanTransport

log = logging.getLogger("escrow.webhooks")

FAN_OUT_CHUNK = 2000  # events read per step
CLAIM_CHUNK = 1000
LEASE_MARGIN_SECONDS = 5
QUEUED_PER_SLOT = 16  # claimed ahead per sending slot, so sends need not wait for the next step
# At least this between busy steps: each step is one write transaction (on SQLite the one write lock,
# taken from the money path's batches), so results and new events go in few, big ones.
STEP_GAP_SECONDS = 0.1
CHECKPOINT_SECONDS = 0.5  # (SQLite companion) how often it checkpoints the WAL


@dataclass
class Job:
    delivery_id: str
    endpoint_id: str
    attempt: int  # the number of this attempt, from 1
    event_id: str
    body: bytes
    url: str
    secrets: list[str]


@dataclass
class Result:
    job: Job
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def allows_private(settings) -> bool:
    return settings.webhook_allow_private if settings.webhook_allow_private is not None else not settings.is_production


class Dispatcher:
    def __init__(
        self,
        ctx: AppContext,
        *,
        schedule: list[float] | None = None,
        allow_private: bool | None = None,
        concurrency: int | None = None,
        endpoint_concurrency: int | None = None,
        inline: bool = False,
    ):
        s = ctx.settings
        self.ctx = ctx
        # On SQLite, run each step on this thread's own connection rather than through the writer's
        # thread (the companion process: no money batches to share a transaction with, and a
        # thread that holds the write lock must not wait for the interpreter lock between rows).
        self.inline = inline and ctx.engines.is_sqlite
        self.schedule = schedule if schedule is not None else s.webhook_retry_schedule
        self.allow_private = allows_private(s) if allow_private is None else allow_private
        self.concurrency = concurrency or s.webhook_concurrency
        self.endpoint_concurrency = endpoint_concurrency or s.webhook_endpoint_concurrency
        self.timeout = s.webhook_timeout_seconds
        self.disable_after = timedelta(days=s.webhook_disable_after_days)
        self.in_flight: dict[str, int] = {}  # claimed and not yet recorded, per endpoint
        self._slots = asyncio.Semaphore(self.concurrency)
        self._endpoint_slots: dict[str, asyncio.Semaphore] = {}
        self.results: list[Result] = []
        self.tasks: set[asyncio.Task] = set()
        self.finished = asyncio.Event()
        self.sent = 0  # attempts made by this replica
        self._clients: dict[str, LeanTransport] = {}
        self._lean: sqlite3.Connection | None = None
        self._checkpoint_at = 0.0

    def transport(self, endpoint_id: str) -> LeanTransport:
        """One small connection pool per endpoint, so one endpoint's traffic costs no other's sends
        anything. Requests go to the transport as httpx requests: nothing of httpx's client layer
        (cookies, auth, redirects, which a delivery never uses) is paid per send."""
        found = self._clients.get(endpoint_id)
        if found is None:
            found = self._clients[endpoint_id] = LeanTransport(self.timeout, keep=self.endpoint_concurrency)
        return found

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        clients, self._clients = self._clients, {}
        for c in clients.values():
            await c.aclose()
        if self._lean is not None:
            self._lean.close()
            self._lean = None

    # -- the loop ---------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        poll = self.ctx.settings.webhook_poll_seconds
        try:
            while True:
                waiter = new_events.event
                started = time.monotonic()
                try:
                    busy = await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook dispatch step failed; will retry")
                    busy = False
                # Even when busy, a pause: a step per money batch or per finished send would take
                # the write lock hundreds of times a second for a few rows each.
                await asyncio.sleep(max(0.0, STEP_GAP_SECONDS - (time.monotonic() - started)))
                if not busy:
                    await self._idle(waiter, poll)
        finally:
            await self.close()

    async def _idle(self, waiter: asyncio.Event, timeout: float) -> None:
        if self.results:  # sends finished meanwhile: record them now
            return
        self.finished.clear()
        a = asyncio.ensure_future(waiter.wait())
        b = asyncio.ensure_future(self.finished.wait())
        try:
            await asyncio.wait((a, b), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            a.cancel()
            b.cancel()

    async def drain(self, timeout: float = 30.0) -> None:
        """Run steps until nothing is due or in flight (tests, the one-shot command); bounded in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = await self.step()
            if not busy and not self.tasks and not self.results and not await self._pending():
                return
            if not busy:
                await self._idle(new_events.event, 0.05)
        raise TimeoutError("webhook deliveries still due after the drain's time limit")

    async def _pending(self) -> int:
        """Deliveries still to be sent to enabled endpoints, and events not yet fanned out."""
        async with self.ctx.engines.reader.connect() as conn:
            return await repository.pending(conn)

    async def _due(self, claim: bool) -> bool:
        """Whether a step would find work: an enabled endpoint behind the newest event, or (when there
        is room to claim) a due delivery nobody holds. Read on the reader, outside any lock."""
        behind = repository.first_behind()
        wanted = [behind, repository.first_due(self.ctx.clock.now())] if claim else [behind]
        if self.inline:
            with self.ctx.engines.sync_reader.connect() as sconn:
                return any(sconn.execute(q).first() is not None for q in wanted)
        async with self.ctx.engines.reader.connect() as conn:
            for q in wanted:
                if (await conn.execute(q)).first() is not None:
                    return True
        return False

    async def step(self, claim: bool = True) -> bool:
        """One transaction: record, fan out, claim; then start the sends. True if anything happened."""
        results, self.results = self.results, []
        full = {e for e, n in self.in_flight.items() if n >= self.endpoint_concurrency * QUEUED_PER_SLOT}
        room = self.concurrency * QUEUED_PER_SLOT - sum(self.in_flight.values()) if claim else 0
        if not results and not await self._due(room > 0):
            return False  # nothing to write: no write transaction (and no write lock) at all
        try:
            if self.inline:
                done = await self._lean_step(results, full, room)
            elif self.ctx.engines.is_sqlite:

                async def op(tx: Tx):
                    return await self._work(tx.conn, tx.now, False, results, full, room)

                done = await self.ctx.writer.run(op)
            else:
                async with self.ctx.engines.writer.begin() as conn:
                    done = await self._work(conn, self.ctx.clock.now(), True, results, full, room)
        except BaseException:
            self.results[:0] = results  # recorded next time
            raise
        fanned, jobs, failing = done
        for job in jobs:
            self.in_flight[job.endpoint_id] = self.in_flight.get(job.endpoint_id, 0) + 1
            task = asyncio.create_task(self._send(job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if failing:
            await self._disable(failing)
        return bool(results or fanned or jobs)

    async def _work(self, conn, now: datetime, is_pg: bool, results: list[Result], full: set[str], room: int):
        failing = await self._record(conn, now, results) if results else []
        fanned = await self._fan_out(conn, now, is_pg)
        jobs = await self._claim(conn, now, is_pg, full, room) if room > 0 else []
        return fanned, jobs, failing

    # -- fan-out ----------------------------------------------------------------------------------
    async def _fan_out(self, conn, now: datetime, is_pg: bool) -> int:
        endpoints = await repository.enabled_cursors(conn, lock=is_pg)
        if not endpoints:
            return 0
        low = min(int(e.cursor) for e in endpoints)
        events = (await conn.execute(event_repo.after_seq(low, FAN_OUT_CHUNK))).all()
        if not events:
            return 0
        last = int(events[-1].seq)
        rows, cursors = [], []
        for ep in endpoints:
            if last <= ep.cursor:
                continue
            for e in events:
                if e.seq <= ep.cursor or not _wants(ep, e):
                    continue
                rows.append((new_id("dlv"), ep.id, int(e.seq), e.id, e.type))
            cursors.append((ep.id, last))
        if rows:
            await repository.add_deliveries(conn, now, rows)
        if cursors:
            await repository.set_cursors(conn, cursors)
        return len(rows)

    # -- claim ------------------------------------------------------------------------------------
    async def _claim(self, conn, now: datetime, is_pg: bool, full: set[str], room: int) -> list[Job]:
        rows = await repository.due_with_events(conn, now, full, min(room * 4, CLAIM_CHUNK), lock=is_pg)
        taken: dict[str, int] = {}
        jobs: list[Job] = []
        for r in rows:
            if len(jobs) >= room:
                break
            busy = self.in_flight.get(r.endpoint_id, 0) + taken.get(r.endpoint_id, 0)
            if busy >= self.endpoint_concurrency * QUEUED_PER_SLOT:
                continue
            taken[r.endpoint_id] = taken.get(r.endpoint_id, 0) + 1
            secrets = _signing_secrets(r, now)
            body = _body(r.event_id, r.type, r.created_at, r.ledger_seq, r.data)
            jobs.append(Job(r.id, r.endpoint_id, int(r.attempts) + 1, r.event_id, body, r.url, secrets))
        if jobs:
            # A claimed delivery may wait for a sending slot behind QUEUED_PER_SLOT others of its endpoint.
            until = now + timedelta(seconds=self.timeout * (QUEUED_PER_SLOT + 1) + LEASE_MARGIN_SECONDS)
            await repository.claim(conn, [j.delivery_id for j in jobs], until)
        return jobs

    # -- the lean step (SQLite, companion process) -----------------------------------------------
    def _lean_db(self) -> sqlite3.Connection:
        """The companion's own connection for its steps: waiting for the write lock is an asyncio
        sleep (sends go on meanwhile), and its commits do not fsync (the WAL stays atomic and the
        next money commit syncs it: a power cut can lose only the latest delivery bookkeeping, and
        then those deliveries are sent again)."""
        if self._lean is None:
            c = sqlite3.connect(self.ctx.engines.sync_writer.url.database, isolation_level=None)
            c.execute("PRAGMA busy_timeout=0")
            c.execute("PRAGMA synchronous=NORMAL")
            self._lean = c
        return self._lean

    async def _lean_lock(self, c: sqlite3.Connection) -> None:
        deadline = time.monotonic() + 30.0
        while True:
            try:
                c.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.001)

    async def _lean_step(self, results: list[Result], full: set[str], room: int):
        """The step with the write lock held as briefly as possible: what to fan out and what to claim
        is read first, outside the lock (reads never wait in WAL mode); then, under BEGIN IMMEDIATE,
        only plain statements: the results, the new deliveries (already claimed by this replica, as
        many as it has room for) and the endpoints' cursors, the claim of due retries. Whatever
        another replica did in between is checked under the lock (fresh cursors, conditional claims),
        so nothing is fanned out or sent twice at once."""
        now = self.ctx.clock.now()
        until = now + timedelta(seconds=self.timeout * (QUEUED_PER_SLOT + 1) + LEASE_MARGIN_SECONDS)
        with self.ctx.engines.sync_reader.connect() as rc:
            endpoints = {r.id: r for r in rc.execute(repository.enabled_endpoints()).all()}
            events = []
            if endpoints:
                low = min(int(r.cursor) for r in endpoints.values())
                events = rc.execute(event_repo.after_seq(low, FAN_OUT_CHUNK, whole=True)).all()
            due = []
            if room > 0 and endpoints:
                stmt = repository.due_of(now, sorted(set(endpoints) - full), min(room, CLAIM_CHUNK))
                due = rc.execute(stmt).all()
        # Only the retries there is room for are claimed (a full endpoint's wait for the next step).
        room_of = {eid: self.endpoint_concurrency * QUEUED_PER_SLOT - self.in_flight.get(eid, 0) for eid in endpoints}
        kept = []
        for r in due:
            if room_of[r.endpoint_id] > 0:
                room_of[r.endpoint_id] -= 1
                kept.append(r)
        due = kept
        taken: dict[str, int] = {}
        jobs: list[Job] = []

        def take(delivery_id: str, endpoint_id: str, attempts: int, ev_id: str, body: bytes) -> bool:
            busy = self.in_flight.get(endpoint_id, 0) + taken.get(endpoint_id, 0)
            if len(jobs) >= room or busy >= self.endpoint_concurrency * QUEUED_PER_SLOT:
                return False
            taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
            ep = endpoints[endpoint_id]
            jobs.append(Job(delivery_id, endpoint_id, attempts + 1, ev_id, body, ep.url, _signing_secrets(ep, now)))
            return True

        bodies = {ev.seq: _body(ev.id, ev.type, ev.created_at, ev.ledger_seq, ev.data) for ev in events}
        c = self._lean_db()
        await self._lean_lock(c)  # BEGIN IMMEDIATE: the write lock, from here to the COMMIT
        try:
            cur = c.cursor()
            failing = self._lean_record(cur, now, results) if results else []
            fresh = repository.lean_enabled_cursors(cur)
            rows, cursors = [], []
            if events:
                last = int(events[-1].seq)
                for eid, cursor in fresh.items():
                    ep = endpoints.get(eid)
                    if ep is None or last <= cursor:
                        continue
                    for ev in events:
                        if ev.seq > cursor and _wants(ep, ev):
                            dlv = new_id("dlv")
                            claimed = take(dlv, eid, 0, ev.id, bodies[ev.seq])
                            rows.append((dlv, eid, int(ev.seq), ev.id, ev.type, claimed))
                    cursors.append((eid, last))
            if rows:
                repository.lean_add_deliveries(cur, now, until, rows)
            if cursors:
                repository.lean_set_cursors(cur, cursors)
            retry = [r for r in due if r.endpoint_id in fresh]
            if retry:
                got = repository.lean_claim(cur, [r.id for r in retry], now, until)
                unclaim = []
                for r in retry:
                    body = _body(r.event_id, r.type, r.created_at, r.ledger_seq, r.data)
                    if r.id in got and not take(r.id, r.endpoint_id, int(r.attempts), r.event_id, body):
                        unclaim.append(r.id)
                if unclaim:
                    repository.lean_unclaim(cur, unclaim)
            cur.close()
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        if time.monotonic() >= self._checkpoint_at:
            # Copy the WAL back into the database here, off the API process, rather than at one of its
            # commits (SQLite's automatic checkpoint runs in whichever commit crosses the threshold).
            self._checkpoint_at = time.monotonic() + CHECKPOINT_SECONDS
            c.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return len(rows), jobs, failing

    def _lean_record(self, cur, now: datetime, results: list[Result]) -> list[str]:
        return repository.lean_record(cur, now, self._outcomes(results), now - self.disable_after)

    # -- send -------------------------------------------------------------------------------------
    async def _send(self, job: Job) -> None:
        slots = self._endpoint_slots.get(job.endpoint_id)
        if slots is None:
            slots = self._endpoint_slots[job.endpoint_id] = asyncio.Semaphore(self.endpoint_concurrency)
        try:
            async with slots, self._slots:
                await self._send_now(job)
        finally:
            self.in_flight[job.endpoint_id] -= 1
            if self.in_flight[job.endpoint_id] <= 0:
                del self.in_flight[job.endpoint_id]

    async def _send_now(self, job: Job) -> None:
        started = time.perf_counter()
        code: int | None = None
        error: str | None = None
        try:
            target = await ssrf.check(job.url, self.allow_private)  # again at each delivery: DNS rebinding
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": "escrow-webhooks/1",
                "host": target.host_header,
                "webhook-id": job.event_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header(job.secrets, job.event_id, timestamp, job.body),
            }
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = httpx.Request(
                "POST", target.pinned_url(), content=job.body, headers=headers, extensions=extensions
            )
            response = await self.transport(job.endpoint_id).handle_async_request(request)
            code = response.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}"
        except ssrf.Refused as exc:
            error = exc.message
        except httpx.TimeoutException:
            error = f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one receiver's oddity kill the dispatcher
            log.exception("webhook send failed")
            error = f"{type(exc).__name__}"[:300]
        self.sent += 1
        self.results.append(
            Result(
                job,
                self.ctx.clock.now(),
                code,
                int((time.perf_counter() - started) * 1000),
                error[:500] if error else None,
            )
        )
        self.finished.set()

    # -- record -----------------------------------------------------------------------------------
    def _outcomes(self, results: list[Result]) -> repository.Outcomes:
        """What the results make of the log: attempt rows, deliveries done, deliveries again later (or
        given up), and the endpoints whose last answer was good or bad."""
        attempts = [
            {
                "id": new_id("att"),
                "delivery_id": r.job.delivery_id,
                "endpoint_id": r.job.endpoint_id,
                "attempted_at": r.at,
                "rest": (r.status_code, r.duration_ms, r.error),
            }
            for r in results
        ]
        done = [
            {"b_id": r.job.delivery_id, "b_attempts": r.job.attempt, "b_code": r.status_code, "b_at": r.at}
            for r in results
            if r.ok
        ]
        again = []
        for r in results:
            if r.ok:
                continue
            n = r.job.attempt
            gave_up = n > len(self.schedule)
            later = r.at + timedelta(seconds=self.schedule[n - 1] if not gave_up else 0)
            again.append(
                {
                    "b_id": r.job.delivery_id,
                    "b_attempts": n,
                    "b_code": r.status_code,
                    "b_error": r.error,
                    "b_status": "failed" if gave_up else "pending",
                    "b_next": later,
                }
            )
        last: dict[str, Result] = {}
        for r in results:
            last[r.job.endpoint_id] = r
        healthy = sorted(e for e, r in last.items() if r.ok)
        failing = sorted(e for e, r in last.items() if not r.ok)
        return repository.Outcomes(attempts, done, again, healthy, failing)

    async def _record(self, conn, now: datetime, results: list[Result]) -> list[str]:
        """Each attempt into the log, each delivery done or rescheduled, each endpoint's failing time;
        returns the endpoints that have failed long enough to be disabled."""
        return await repository.record(conn, now, self._outcomes(results), now - self.disable_after)

    async def _disable(self, endpoint_ids: list[str]) -> None:
        """Endpoints failing for days are disabled, and their owners told by an event (through the
        writer: events are written only under its lock, which keeps their order the commit order)."""
        disable_after = self.disable_after

        async def op(tx: Tx) -> int:
            n = 0
            for eid in endpoint_ids:
                e = await repository.endpoint(tx.conn, eid)
                if (
                    e is None
                    or e.status != "enabled"
                    or e.failing_since is None
                    or _aware(e.failing_since) > tx.now - disable_after
                ):
                    continue
                await repository.set_endpoint(tx.conn, eid, status="disabled")
                out = endpoint_out(e)
                out["status"] = "disabled"
                emit(
                    tx,
                    "webhook_endpoint.disabled",
                    out,
                    merchant_id=e.owner_id if e.owner_role in ("merchant", "auditor") else None,
                )
                n += 1
            return n

        n = await self.ctx.writer.run(op)
        if n:
            log.warning("disabled %d webhook endpoint(s) failing for %s", n, disable_after)


def _wants(ep, event) -> bool:
    """Whether the endpoint asked for this event and its owner may see it (SPEC §9)."""
    types = orjson.loads(ep.event_types)
    if "*" not in types and event.type not in types:
        return False
    return event_repo.may_see(ep.owner_role, ep.owner_id, event)


def _signing_secrets(ep, now: datetime) -> list[str]:
    """The current secret, and during a rotation's grace period the previous one too."""
    out = [ep.secret]
    if ep.previous_secret and ep.previous_secret_until is not None and _aware(ep.previous_secret_until) > now:
        out.append(ep.previous_secret)
    return out


def _body(event_id: str, type_: str, created_at, ledger_seq, data: str) -> bytes:
    """The event as delivered: the stored `data` is spliced in as it is, not decoded and encoded again."""
    return (
        b'{"id":'
        + orjson.dumps(event_id)
        + b',"type":'
        + orjson.dumps(type_)
        + b',"created_at":'
        + orjson.dumps(_iso(created_at))
        + b',"ledger_seq":'
        + orjson.dumps(ledger_seq)
        + b',"data":'
        + data.encode()
        + b"}"
    )


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _iso(dt) -> str | None:
    return iso(_aware(dt)) if dt is not None else None


def dispatcher_for(ctx: AppContext) -> Dispatcher:
    found = ctx.extras.get("webhook_dispatcher")
    if found is None:
        found = ctx.extras["webhook_dispatcher"] = Dispatcher(ctx)
    return found


async def run_forever(ctx: AppContext) -> None:
    """The replica's dispatcher: in a companion process (`ESCROW_WEBHOOK_PROCESS`, the default), so
    fanning out, signing and sending never take the API process's CPU (one interpreter lock); or as
    a task of this process."""
    if ctx.settings.webhook_process:
        await run_companion(ctx)
    else:
        await dispatcher_for(ctx).run_forever()


async def run_companion(ctx: AppContext) -> None:
    """Start `python -m service.webhooks.dispatcher` beside this process (same ESCROW_* settings),
    wake it through its stdin whenever a batch of this process commits events (it also polls, for
    other replicas' events), and start it again if it dies. It exits when its stdin closes: this
    process's end, even by SIGKILL, ends it; a send cut short is sent again (at least once)."""
    while True:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.webhooks.dispatcher", stdin=asyncio.subprocess.PIPE, env=dict(os.environ)
        )
        assert proc.stdin is not None
        exited = asyncio.ensure_future(proc.wait())
        try:
            waiter = new_events.event
            while not exited.done():
                woken = asyncio.ensure_future(waiter.wait())
                await asyncio.wait((woken, exited), return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                waiter = new_events.event  # (set meanwhile by a later commit: the next wake at once)
                if not exited.done() and proc.stdin.transport.get_write_buffer_size() == 0:
                    try:
                        proc.stdin.write(b".")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                await asyncio.sleep(STEP_GAP_SECONDS / 2)  # one wake per batch of commits, not per commit
        except asyncio.CancelledError:
            exited.cancel()
            if proc.returncode is None:
                proc.stdin.close()  # it finishes its step and exits
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            raise
        log.warning("the webhook dispatcher process exited with %s; starting it again", proc.returncode)
        await asyncio.sleep(1)


async def _companion_main() -> None:
    from service.app import build_context  # (service.app starts the dispatcher: imported here, not above)
    from service.core.settings import get_settings

    ctx = build_context(get_settings())
    async with ctx.engines.reader.connect() as conn:
        await ctx.clock.refresh(conn)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    wakes = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(wakes), sys.stdin)

    async def read_wakes() -> None:
        while await wakes.read(4096):
            new_events()
        stop.set()  # the API process is gone

    reading = asyncio.create_task(read_wakes())
    dispatching = asyncio.create_task(Dispatcher(ctx, inline=True).run_forever())
    try:
        await asyncio.wait((asyncio.ensure_future(stop.wait()), dispatching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reading, dispatching):
            task.cancel()
        await asyncio.gather(reading, dispatching, return_exceptions=True)
        await ctx.writer.stop()
        await ctx.engines.dispose()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: the API process ends this one
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_companion_main())
