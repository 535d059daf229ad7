from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service.cards.service import list_cards_page
from service.consumers import repository, service, verification
from service.consumers.schemas import (
    Consumer,
    ConsumerCreate,
    RedemptionPage,
    RegisteredConsumer,
    Session,
    SessionCreate,
    SmsOutbox,
    VerificationCreate,
    VerificationStarted,
)
from service.consumers.sms import OutboxSender, deliver_later, make_sender, message_out
from service.core.ids import new_token, token_hash
from service.event_log.service import new_events
from service.http.client_address import MemoryLimiter, limit_bucket, parse_networks, request_client
from service.http.common import After, Ctx, Limit, caller, long_poll, page, read
from service.http.context import AppContext
from service.http.errors import TooManyRequests, responses
from service.keys_api import repository as keys
from service.merchants.schemas import CardPage
from service.redemptions import repository as redemptions
from service.redemptions.service import redemption_out
from service.security.idempotency import mutate
from service.security.revocation import bump_epoch

router = APIRouter(prefix="/v1/consumers", tags=["consumers"])
sms_test_router = APIRouter(prefix="/v1/test", tags=["test"])


def _admit(ctx: AppContext, request: Request) -> str:
    """The caller's limit bucket, after the in-memory gate: a flood is refused here, before any write."""
    trusted = ctx.extras.get("trusted_proxies")
    if trusted is None:
        trusted = ctx.extras["trusted_proxies"] = parse_networks(ctx.settings.trusted_proxies)
    bucket = limit_bucket(request_client(request, trusted))
    limiter = ctx.extras.get("anon_limiter")
    if limiter is None:
        limiter = ctx.extras["anon_limiter"] = MemoryLimiter()
    limit = ctx.settings.registration_limit_per_minute
    if limiter.hit(bucket, ctx.clock.now(), limit):
        raise TooManyRequests(f"Too many attempts from this address; the limit is {limit} a minute.", "rate_limited")
    return bucket


def sender_of(ctx: AppContext):
    sender = ctx.extras.get("sms_sender")
    if sender is None:
        sender = ctx.extras["sms_sender"] = make_sender(ctx.settings)
    return sender


def _with_token(response: Response, token: str) -> Response:
    """Add the new token to a first answer. A replayed answer never carries it (it was never stored)."""
    if response.status_code != 201 or response.headers.get("idempotent-replayed") == "true":
        return response
    body = orjson.loads(response.body)
    body["token"] = token
    return Response(orjson.dumps(body), status_code=201, media_type="application/json")


@router.post(
    "/verifications", status_code=202, response_model=VerificationStarted, responses=responses(400, 409, 422, 429)
)
async def start_verification(body: VerificationCreate, request: Request, ctx: Ctx):
    """Send a 6-digit code to the phone (anyone). The answer is the same whether or not the phone is registered."""
    bucket = _admit(ctx, request)
    phone = service.normalize_phone(body.phone)
    sender = sender_of(ctx)
    limit = ctx.settings.registration_limit_per_minute
    sent: list[str] = []

    async def op(tx):
        await verification.count_address(tx, bucket, limit)
        answer, code = await verification.start(
            tx, ctx.keys.phone, sender, phone, ctx.settings.codes_per_phone_per_hour
        )
        sent[:] = [code]  # a batch run again the careful way runs this again: the last code is the committed one
        return 202, answer

    response = await mutate(ctx, request, None, body, op, caller=f"anon:{bucket}")
    if sent and response.status_code == 202:  # committed (not a replay): now deliver it
        if isinstance(sender, OutboxSender):
            await sender.deliver(phone, sent[0])
        else:
            deliver_later(sender, phone, sent[0])
    return response


async def _with_new_token(ctx: AppContext, request: Request, body, rule, *args) -> Response:
    """A write proved by a phone code (anyone), answered with a new consumer token: `rule(tx, vault, *args,
    token)`. A replay of the same Idempotency-Key answers the other fields without the token."""
    bucket = _admit(ctx, request)
    token = new_token("cs")
    limit = ctx.settings.registration_limit_per_minute

    async def op(tx):
        await verification.count_address(tx, bucket, limit)
        return await rule(tx, ctx.keys.phone, *args, token)

    return _with_token(await mutate(ctx, request, None, body, op, caller=f"anon:{bucket}"), token)


@router.post("", status_code=201, response_model=RegisteredConsumer, responses=responses(400, 404, 409, 422, 429))
async def register_consumer(body: ConsumerCreate, request: Request, ctx: Ctx):
    """Register with a code from `/v1/consumers/verifications` (anyone); the answer carries the `token` once."""
    args = (body.name, body.phone, body.verification_id, body.code)
    return await _with_new_token(ctx, request, body, service.register, *args)


@router.post("/sessions", status_code=201, response_model=Session, responses=responses(400, 404, 409, 422, 429))
async def sign_in(body: SessionCreate, request: Request, ctx: Ctx):
    """Sign in again on a new device with a code (anyone holding it) → a new `token`; other tokens keep working."""
    return await _with_new_token(ctx, request, body, service.sign_in, body.phone, body.verification_id, body.code)


@router.delete("/me/tokens/current", status_code=204, responses=responses(401, 403))
async def sign_out(request: Request, ctx: Ctx, who: caller("consumer")):
    """Sign out: this token stops working at once, on every replica; the consumer's other tokens keep working."""
    digest = token_hash(request.headers["authorization"].partition(" ")[2].strip())

    async def op(tx):
        await keys.end_one(tx.conn, digest, who.party_id)
        await bump_epoch(tx)

    await ctx.writer.run(op)
    ctx.token_cache.pop(digest, None)
    return Response(status_code=204)


@router.get("/me", response_model=Consumer, responses=responses(401, 403))
async def my_consumer_profile(ctx: Ctx, who: caller("consumer")):
    return service.consumer_out(await read(ctx, service.load, who.party_id))


@router.get("/me/redemptions", response_model=RedemptionPage, responses=responses(401, 403, 422))
async def my_redemptions(
    ctx: Ctx,
    who: caller("consumer"),
    status: Literal["pending", "confirmed", "rejected", "cancelled", "expired"] | None = None,
    limit: Limit = 50,
    after: After = None,
    wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for a new item")] = 0,
):
    """The confirmation inbox: `?status=pending` lists the asks waiting for this consumer's answer.
    With `wait` (long-poll), answers at once if there are items after `after`, else waits up to that
    many seconds for a new one (pass `after` = the id of the newest item held)."""
    rows = await long_poll(ctx, redemptions.inbox(who.party_id, status, limit, after), wait, new_events)
    return page([redemption_out(r) for r in rows], limit)


@router.get("/me/cards", response_model=CardPage, responses=responses(401, 403, 422))
async def my_consumer_cards(ctx: Ctx, who: caller("consumer"), limit: Limit = 50, after: After = None):
    return await list_cards_page(ctx, "consumer_id", who.party_id, limit, after)


@sms_test_router.get("/sms", response_model=SmsOutbox, responses=responses(401, 403, 422))
async def read_sms_outbox(phone: Annotated[str, Query(min_length=5, max_length=20)], ctx: Ctx, who: caller("operator")):
    """The outbox for one phone, oldest first (only with ESCROW_ENV=test): how tests finish the code flow."""
    phone = service.normalize_phone(phone)
    rows = await read(ctx, repository.outbox, ctx.keys.phone.lookup(phone))
    return {"items": [message_out(phone, r) for r in rows]}
