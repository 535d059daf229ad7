"""SMS senders for one-time codes (`ESCROW_SMS_SENDER`, SPEC §8).

- `outbox` (default outside production): the message is written to `sms_outbox` in the same
  transaction as its verification, and logged; in `ESCROW_ENV=test` the operator reads it at
  `GET /v1/test/sms`, and `escrow sms outbox` prints it in any environment.
- `http` (production): after the verification committed, one POST to `ESCROW_SMS_URL` with
  `Authorization: Bearer ESCROW_SMS_TOKEN` and the JSON body the common Chinese gateways take:
  `{"phone", "sign_name", "template_code", "template_param": {"code"}}`. Any 2xx is success; a
  timeout, a connection error or any other status is retried a few times with a short backoff. The
  code never reaches the log.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from service.consumers import repository
from service.core.clock import iso
from service.core.ids import new_id
from service.core.settings import Settings

log = logging.getLogger("escrow.sms")


def message_text(code: str) -> str:
    return f"【预付保】验证码 {code}，5分钟内有效，请勿告诉他人。Your code is {code}; it expires in 5 minutes."


class OutboxSender:
    """Keeps the message in the database (inside the verification's transaction) and logs it."""

    name = "outbox"

    def __init__(self, settings: Settings):
        self.log_code = not settings.is_production

    async def store(self, tx, vault, phone: str, lookup: str, code: str) -> None:
        await repository.add_message(
            tx.conn,
            id=new_id("sms"),
            phone_lookup=lookup,
            phone_ciphertext=vault.encrypt(phone),
            text=message_text(code),
            code=code,
            sent_at=tx.now,
        )

    async def deliver(self, phone: str, code: str) -> bool:
        hint = phone[:3] + "****" + phone[-4:]
        if self.log_code:
            log.warning("SMS outbox: code %s for %s (development: nothing was sent)", code, hint)
        else:
            log.warning("SMS outbox: a code for %s is in sms_outbox (nothing was sent)", hint)
        return True


class HttpSender:
    """POSTs the code to an SMS gateway; never logs it."""

    name = "http"

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self.url = settings.sms_url
        self.token = settings.sms_token
        self.sign_name = settings.sms_sign_name
        self.template = settings.sms_template
        self.timeout = settings.sms_timeout_seconds
        self.retries = settings.sms_retries
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    async def store(self, tx, vault, phone: str, lookup: str, code: str) -> None:
        return None  # nothing kept: the code lives only in the verification's hash and the gateway

    def body(self, phone: str, code: str) -> dict:
        return {
            "phone": phone,
            "sign_name": self.sign_name,
            "template_code": self.template,
            "template_param": {"code": code},
        }

    async def deliver(self, phone: str, code: str) -> bool:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport)
        headers = {"Authorization": f"Bearer {self.token}"}
        hint = phone[:3] + "****" + phone[-4:]
        for attempt in range(self.retries + 1):
            try:
                r = await self._client.post(self.url, json=self.body(phone, code), headers=headers)
                if 200 <= r.status_code < 300:
                    return True
                problem = f"status {r.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning("SMS gateway attempt %d for %s failed: %s", attempt + 1, hint, problem)
            if attempt < self.retries:
                await asyncio.sleep(0.2 * 2**attempt)
        log.error("SMS gateway: giving up on a code for %s after %d attempts", hint, self.retries + 1)
        return False


def make_sender(settings: Settings):
    return HttpSender(settings) if settings.effective_sms_sender == "http" else OutboxSender(settings)


_in_flight: set[asyncio.Task] = set()


def deliver_later(sender, phone: str, code: str) -> None:
    """Send after the answer: the client's 202 does not wait on the gateway (a slow gateway is not our latency)."""
    task = asyncio.get_running_loop().create_task(sender.deliver(phone, code))
    _in_flight.add(task)
    task.add_done_callback(_in_flight.discard)


async def outbox_messages(engine, vault, phone: str, limit: int = 20) -> list[dict]:
    """The last messages the outbox kept for `phone`, oldest first (`escrow sms outbox`, the demo)."""
    async with engine.connect() as conn:
        rows = await repository.outbox(conn, vault.lookup(phone), limit)
    return [message_out(phone, r) for r in rows]


def message_out(phone: str, row) -> dict:
    """A kept message as `escrow sms outbox` and `GET /v1/test/sms` show it."""
    return {"phone": phone, "text": row.text, "code": row.code, "sent_at": iso(row.sent_at)}


def _outbox_command(args) -> int:
    import json

    from service.cli import _with_context
    from service.consumers.service import normalize_phone
    from service.http.errors import Unprocessable

    try:
        phone = normalize_phone(args.phone)
    except Unprocessable as exc:
        print(exc.message)
        return 2

    async def run(ctx):
        return await outbox_messages(ctx.engines.reader, ctx.keys.phone, phone, args.limit)

    for message in asyncio.run(_with_context(run)):
        print(json.dumps(message, ensure_ascii=False))
    return 0


def add_commands(sub) -> None:
    sms = sub.add_parser("sms", help="SMS commands").add_subparsers(dest="sms_command", required=True)
    p = sms.add_parser("outbox", help="print the codes the outbox sender kept for a phone (development)")
    p.add_argument("--phone", required=True)
    p.add_argument("--limit", type=int, default=5)
    p.set_defaults(func=_outbox_command)
