"""Webhook endpoints over HTTP (SPEC §9): merchants, regulators, auditors and the operator register
their own; another party's endpoint is 404."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request

from service.cards.schemas import EmptyBody
from service.db.writer import Tx
from service.event_log.event_types import EVENT_TYPES
from service.http.common import After, Limit
from service.http.context import AppContext, get_ctx
from service.http.errors import Unprocessable, responses
from service.security.auth import Principal, require
from service.security.idempotency import mutate
from service.webhooks import service, ssrf
from service.webhooks.dispatcher import allows_private
from service.webhooks.schemas import (
    Delivery,
    DeliveryPage,
    Endpoint,
    EndpointCreate,
    EndpointDeleted,
    EndpointPage,
    EndpointWithSecret,
)

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])
owners = require(*service.OWNER_ROLES)


def _checked_types(types: list[str]) -> list[str]:
    unknown = sorted(set(types) - set(EVENT_TYPES) - {"*"})
    if unknown:
        raise Unprocessable(f"Unknown event types: {', '.join(unknown)[:200]}.", "unknown_event_type")
    return list(dict.fromkeys(types))


async def _endpoint_action(
    ctx: AppContext, request: Request, who: Principal, body, status: int, action: Callable[[Tx], Awaitable[dict]]
):
    """A write on one endpoint, through the writer, with the Idempotency-Key honoured."""

    async def op(tx):
        return status, await action(tx)

    return await mutate(ctx, request, who, body or {}, op)


@router.post("", status_code=201, response_model=EndpointWithSecret, responses=responses(400, 401, 403, 409, 422))
async def create_endpoint(
    body: EndpointCreate, request: Request, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(owners)
):
    """Register an endpoint; the answer carries its signing `secret` (`whsec_…`) this once."""
    types = _checked_types(body.event_types)
    await ssrf.check(body.url, allows_private(ctx.settings))
    return await _endpoint_action(ctx, request, who, body, 201, lambda tx: service.create(tx, who, body.url, types))


@router.get("", response_model=EndpointPage, responses=responses(401, 403, 422))
async def list_endpoints(
    ctx: AppContext = Depends(get_ctx), who: Principal = Depends(owners), limit: Limit = 50, after: After = None
):
    async with ctx.engines.reader.connect() as conn:
        return await service.list_endpoints(conn, who, limit, after)


@router.get("/{endpoint_id}", response_model=Endpoint, responses=responses(401, 403, 404))
async def get_endpoint(endpoint_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(owners)):
    async with ctx.engines.reader.connect() as conn:
        return await service.read(conn, who, endpoint_id)


@dataclass
class EndpointCall:
    """What a write on one of the caller's endpoints needs (a dependency shared by those routes)."""

    endpoint_id: str
    request: Request
    ctx: AppContext
    who: Principal
    body: EmptyBody | None

    async def run(self, status: int, action: Callable[[Tx], Awaitable[dict]]):
        return await _endpoint_action(self.ctx, self.request, self.who, self.body, status, action)


def endpoint_call(
    endpoint_id: str,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(owners),
    body: EmptyBody | None = None,
) -> EndpointCall:
    return EndpointCall(endpoint_id, request, ctx, who, body)


@router.delete("/{endpoint_id}", response_model=EndpointDeleted, responses=responses(400, 401, 403, 404))
async def delete_endpoint(call: EndpointCall = Depends(endpoint_call)):
    return await call.run(200, lambda tx: service.remove(tx, call.who, call.endpoint_id))


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret, responses=responses(400, 401, 403, 404))
async def rotate_secret(call: EndpointCall = Depends(endpoint_call)):
    """A new secret, shown once; the old one goes on signing beside it for the grace period
    (`ESCROW_WEBHOOK_SECRET_GRACE_HOURS`)."""
    grace = call.ctx.settings.webhook_secret_grace_hours
    return await call.run(200, lambda tx: service.rotate_secret(tx, call.who, call.endpoint_id, grace))


@router.post("/{endpoint_id}/enable", response_model=Endpoint, responses=responses(400, 401, 403, 404))
async def enable_endpoint(call: EndpointCall = Depends(endpoint_call)):
    """Enable again an endpoint the dispatcher disabled after days of failures."""
    return await call.run(200, lambda tx: service.enable(tx, call.who, call.endpoint_id))


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage, responses=responses(401, 403, 404, 422))
async def list_deliveries(
    endpoint_id: str,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(owners),
    limit: Limit = 50,
    after: After = None,
):
    """The delivery log: each delivery with its attempts (status code, duration, error)."""
    async with ctx.engines.reader.connect() as conn:
        return await service.list_deliveries(conn, who, endpoint_id, limit, after)


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=Delivery,
    responses=responses(400, 401, 403, 404, 409),
)
async def retry_delivery(delivery_id: str, call: EndpointCall = Depends(endpoint_call)):
    return await call.run(202, lambda tx: service.retry(tx, call.who, call.endpoint_id, delivery_id))
