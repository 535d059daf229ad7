"""`serve --workers 2`: two HTTP processes whose asks and confirms one writer process writes.

Against a real `python -m service.cli serve --workers 2 --writer-process on` (on SQLite that is what
`auto` gives; on PostgreSQL it is asked for here so that both databases run the same path):

- asks and confirms over many connections (so through both HTTP processes) are answered, with the
  Idempotency-Key honoured across processes, and money adds up on every card;
- they go through the writer process: while it is stopped (SIGSTOP) an ask is not answered, and it
  is answered once the process runs again;
- when the writer process is killed, the HTTP processes write themselves: asks and confirms go on
  being answered (503 at most for a request that was in flight on the broken connection), every
  card's parts add up to its price; `serve` starts the writer process again and the HTTP processes
  go back to it; the ledger verifies.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from api_tests.realserver import (
    OPERATOR_TOKEN,
    REPO,
    Http,
    RealServer,
    fresh_database,
    gather_limited,
    ledger_verify,
    new_consumer,
    new_count_product,
    new_merchant,
)


class Served(RealServer):
    """`service.cli serve --workers 2 --writer-process on` instead of uvicorn alone."""

    async def start(self, timeout: float = 60) -> Served:
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--workers", "2"]
        cmd += ["--writer-process", "on"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        await self.wait_healthy(timeout)
        return self

    def writer_pid(self) -> int:
        """The writer process: the child of `serve` running service.ops.write_server."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if b"service.ops.write_server" in cmdline and parent == self.proc.pid:
                return int(entry)
        raise AssertionError(f"no writer process under {self.proc.pid}:\n{self.log_tail()}")


@pytest.fixture
async def served():
    db = await fresh_database("escrow_crash_writer_process")
    data_dir = Path(tempfile.mkdtemp(prefix="escrow-wp-"))
    server = Served(data_dir, db, "served")
    http = None
    ok = False
    try:
        server.migrate()
        await server.start()
        http = server.client(64)
        yield server, http
        ok = True
    finally:
        if http is not None:
            await http.close()
        server.stop()
        await db.drop()
        if ok:
            shutil.rmtree(data_dir, ignore_errors=True)


async def _shop(http: Http, n: int):
    merchant = await new_merchant(http, "Writer Gym 写者健身")
    product = await new_count_product(http, merchant, price=100_003, uses=2_000)
    people = await gather_limited(8, [new_consumer(http, i) for i in range(n)])
    cards = []
    for p in people:
        body = {
            "product_id": product["id"],
            "payment": {"method": "alipay", "reference": f"ali-{secrets.token_hex(6)}"},
        }
        cards.append(await http.expect(201, "POST", "/v1/cards", p["token"], body))
    return merchant, people, cards


async def _pair(http: Http, merchant: dict, person: dict, card: dict, tag: str) -> tuple[int, int]:
    """Ask and confirm one use (each sent twice under its key); (statuses) of the confirm's two answers."""
    ask_path = f"/v1/cards/{card['id']}/redemptions"
    a1 = await http.request("POST", ask_path, merchant["api_key"], {"uses": 1}, key=f"ask-{tag}")
    a2 = await http.request("POST", ask_path, merchant["api_key"], {"uses": 1}, key=f"ask-{tag}")
    assert a1.status == 201 and a2.status == 201 and a2.replayed and a1.body == a2.body, (a1, a2)
    path = f"/v1/redemptions/{a1.body['id']}/confirm"
    c1 = await http.request("POST", path, person["token"], None, key=f"confirm-{tag}")
    c2 = await http.request("POST", path, person["token"], None, key=f"confirm-{tag}")
    return c1.status, c2.status


async def _cards_add_up(http: Http, cards: list[dict], used: dict[str, int]) -> None:
    for card in cards:
        got = await http.expect(200, "GET", f"/v1/cards/{card['id']}", OPERATOR_TOKEN)
        b = got["balance"]
        assert got["price"] == b["escrow"] + b["released"] + b["refunded"], got
        assert b["units_used"] == used[card["id"]] and b["units_held"] == 0, (got, used[card["id"]])


async def test_two_http_processes_write_through_one_writer_process(served):
    server, http = served
    merchant, people, cards = await _shop(http, 12)
    used = {c["id"]: 0 for c in cards}

    async def worker(i: int, rounds: int) -> None:
        for r in range(rounds):
            statuses = await _pair(http, merchant, people[i], cards[i], f"{i}-{r}")
            assert statuses == (200, 200), statuses
            used[cards[i]["id"]] += 1

    await asyncio.gather(*(worker(i, 4) for i in range(len(cards))))
    await _cards_add_up(http, cards, used)

    await _asks_wait_for_the_writer_process(server, http, merchant, people[0], cards[0], "held")
    used[cards[0]["id"]] += 1
    await _cards_add_up(http, cards, used)


async def _asks_wait_for_the_writer_process(server, http, merchant, person, card, key: str) -> None:
    """Stopped (SIGSTOP), the writer process answers nothing: an ask waits for it, and is answered
    (then confirmed) once it runs again."""
    pid = server.writer_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        ask = asyncio.ensure_future(
            http.request("POST", f"/v1/cards/{card['id']}/redemptions", merchant["api_key"], {"uses": 1}, key=key)
        )
        done, _ = await asyncio.wait({ask}, timeout=1.5)
        assert not done, "an ask was answered while the writer process was stopped"
    finally:
        os.kill(pid, signal.SIGCONT)
    answer = await asyncio.wait_for(ask, 20)
    assert answer.status == 201, answer
    confirmed = await http.request("POST", f"/v1/redemptions/{answer.body['id']}/confirm", person["token"])
    assert confirmed.status == 200, confirmed


async def test_without_the_writer_process_the_http_processes_write_themselves(served):
    server, http = served
    merchant, people, cards = await _shop(http, 8)
    used = {c["id"]: 0 for c in cards}
    stop = time.monotonic() + 3.0
    unavailable = 0

    async def worker(i: int) -> None:
        nonlocal unavailable
        r = 0
        while time.monotonic() < stop and r < 1_900:
            card, tag = cards[i], f"{i}-{r}"
            ask_path = f"/v1/cards/{card['id']}/redemptions"
            for _ in range(20):  # a 503 (the broken connection) is retried under the same key
                a = await http.request("POST", ask_path, merchant["api_key"], {"uses": 1}, key=f"ask-{tag}")
                if a.status != 503:
                    break
                unavailable += 1
                await asyncio.sleep(0.1)
            assert a.status == 201, a
            for _ in range(20):
                c = await http.request(
                    "POST", f"/v1/redemptions/{a.body['id']}/confirm", people[i]["token"], None, key=f"c-{tag}"
                )
                if c.status != 503:
                    break
                unavailable += 1
                await asyncio.sleep(0.1)
            assert c.status == 200, c
            used[card["id"]] += 1
            r += 1

    workers = asyncio.gather(*(worker(i) for i in range(len(cards))))
    await asyncio.sleep(0.5)
    killed = server.writer_pid()
    os.kill(killed, signal.SIGKILL)
    at_kill = sum(used.values())
    await asyncio.wait_for(workers, 60)
    assert sum(used.values()) >= at_kill + 2 * len(cards)  # pairs went on after the kill …
    assert "this process writes itself" in server.log_tail(400)  # … written by the HTTP processes
    await _cards_add_up(http, cards, used)

    # `serve` starts it again, and the HTTP processes go back to it (they try its socket once a second).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if server.writer_pid() != killed:
                _, w = await asyncio.open_unix_connection(str(server.data_dir / "writer.sock"))
                w.close()
                break
        except (AssertionError, OSError):
            pass
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # past the HTTP processes' pause before they try the socket again
    await _asks_wait_for_the_writer_process(server, http, merchant, people[0], cards[0], "after-restart")
    used[cards[0]["id"]] += 1
    await _cards_add_up(http, cards, used)
    server.stop()
    assert "ledger OK" in ledger_verify(server.env)
