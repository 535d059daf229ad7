"""HTTP for a redemption (核销): reading it, and the consumer's or the merchant's answer to a pending ask.

The ask itself is `POST /v1/cards/{card_id}/redemptions` (service/cards/router.py); asks and confirms
are usually answered by the redemption fast path in front of FastAPI, with the same service calls."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.cards.schemas import EmptyBody
from service.http.common import Ctx, answer, caller
from service.http.context import AppContext, get_ctx
from service.http.errors import NotFound, responses
from service.redemptions import repository, service
from service.redemptions.schemas import ConfirmedRedemption, Redemption
from service.security.auth import Principal, require
from service.security.idempotency import mutate

router = APIRouter(prefix="/v1/redemptions", tags=["redemptions"])
ANSWER_ERRORS = responses(400, 401, 403, 404, 409)


ANY_PARTY = require("consumer", "merchant", "regulator", "auditor", "operator")


def visible_or_404(row, who: Principal, not_found: NotFound):
    """The row, if the caller may see it: a consumer or a merchant only its own cards and redemptions."""
    if (
        row is None
        or (who.role == "consumer" and row.consumer_id != who.party_id)
        or (who.role == "merchant" and row.merchant_id != who.party_id)
    ):
        raise not_found
    return row


@router.get("/{redemption_id}", response_model=Redemption, responses=responses(401, 403, 404))
async def get_redemption(redemption_id: str, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(ANY_PARTY)):
    async with ctx.engines.reader.connect() as conn:
        r = await repository.by_id(conn, redemption_id)
    not_found = NotFound("No such redemption.", "redemption_not_found")
    return service.redemption_out(visible_or_404(r, who, not_found))


@router.post("/{redemption_id}/confirm", response_model=ConfirmedRedemption, responses=ANSWER_ERRORS)
async def confirm(
    redemption_id: str, request: Request, ctx: Ctx, who: caller("consumer"), body: EmptyBody | None = None
):
    """Confirm: the principal share moves to the merchant; the answer's `ledger_seq` is the receipt."""
    return await mutate(ctx, request, who, body or {}, answer(200, service.confirm, who.party_id, redemption_id))


@router.post("/{redemption_id}/reject", response_model=Redemption, responses=ANSWER_ERRORS)
async def reject(
    redemption_id: str, request: Request, ctx: Ctx, who: caller("consumer"), body: EmptyBody | None = None
):
    """Reject: the hold is voided and the money stays in escrow."""
    return await _void(request, ctx, who, body, redemption_id, "rejected")


@router.post("/{redemption_id}/cancel", response_model=Redemption, responses=ANSWER_ERRORS)
async def cancel(
    redemption_id: str, request: Request, ctx: Ctx, who: caller("merchant"), body: EmptyBody | None = None
):
    """The merchant withdraws a pending ask."""
    return await _void(request, ctx, who, body, redemption_id, "cancelled")


async def _void(
    request: Request, ctx: AppContext, who: Principal, body: EmptyBody | None, redemption_id: str, status: str
) -> Response:
    """The caller's own pending ask ends unanswered (rejected by its consumer, cancelled by its merchant)."""
    party_field = "consumer_id" if who.role == "consumer" else "merchant_id"
    rule = answer(200, service.settle_without_release, redemption_id, party_field, who.party_id, status)
    return await mutate(ctx, request, who, body or {}, rule)
