"""HTTP for custody (资金托管): settlement batches, the bank's results, bank statements."""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import StringConstraints

from service.http.common import After, Limit
from service.http.context import AppContext, get_ctx
from service.http.errors import EscrowError, Unprocessable, responses
from service.security.auth import Principal, require
from service.security.idempotency import checked_key, fingerprint_of, json_response, mutate, run_write
from service.settlements import service, statements
from service.settlements.schemas import (
    BATCH_AS_CSV,
    CSV_REQUEST,
    BankStatementMatch,
    BatchPage,
    CloseDay,
    InstructionPage,
    Results,
    SettlementBatch,
)

router = APIRouter(prefix="/v1", tags=["custody"])

READERS = ("auditor", "operator", "regulator")


class UnsupportedMediaType(EscrowError):
    status_code = 415
    code = "unsupported_media_type"


def _csv_response(batch: dict) -> Response:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["instruction_id", "kind", "date", "merchant_id", "card_id", "amount", "method", "reference", "status"])
    for p in batch["payouts"]:
        w.writerow([p["id"], "payout", batch["date"], p["merchant_id"], "", p["amount"], "", "", p["status"]])
    for f in batch["refunds"]:
        w.writerow(
            [
                f["id"],
                "refund",
                batch["date"],
                f["merchant_id"],
                f["card_id"],
                f["amount"],
                f["method"],
                f["reference"],
                f["status"],
            ]
        )
    t = batch["totals"]
    headers = {
        "Content-Disposition": f'attachment; filename="settlement-{batch["date"]}.csv"',
        "X-Settlement-Id": batch["id"],
        "X-Payouts-Total": str(t["payouts"]),
        "X-Refunds-Total": str(t["refunds"]),
        "X-Instructions": str(t["payouts_count"] + t["refunds_count"]),
    }
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@router.post(
    "/settlements",
    status_code=201,
    response_model=SettlementBatch,
    responses={**responses(400, 401, 403, 409, 422), 200: {"model": SettlementBatch, "description": "Closed already"}},
)
async def close_day(
    body: CloseDay,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("auditor", "operator")),
):
    """Close a day: 201 with its settlement batch, or 200 with the same batch if the day was closed
    already; 409 while the day has not ended in the settlement time zone."""
    day = service.parse_day(body.date)

    async def op(tx):
        return await service.close_day(tx, day, ctx.settings.settlement_timezone)

    return await mutate(ctx, request, who, body, op)


@router.get("/settlements", response_model=BatchPage, responses=responses(401, 403, 422))
async def list_settlements(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require(*READERS)),
    limit: Limit = 50,
    after: After = None,
):
    """Batches in date order, totals only; the cursor is the last date of the page."""
    async with ctx.engines.reader.connect() as conn:
        return await service.list_batches(conn, limit, after)


@router.get("/settlements/instructions", response_model=InstructionPage, responses=responses(401, 403, 422))
async def list_settlement_instructions(
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require(*READERS)),
    status: Literal["open", "failed", "unexecuted", "executed"] = "unexecuted",
    limit: Limit = 50,
    after: After = None,
):
    """Instructions by status across every batch; `unexecuted` (the default) is open and failed together."""
    statuses = ("open", "failed") if status == "unexecuted" else (status,)
    async with ctx.engines.reader.connect() as conn:
        return await service.list_instructions(conn, statuses, limit, after)


@router.get(
    "/settlements/{batch_id}",
    response_model=SettlementBatch,
    responses={**responses(401, 403, 404, 422), **BATCH_AS_CSV},
)
async def get_settlement(
    batch_id: Annotated[str, StringConstraints(max_length=40)],
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require(*READERS)),
    format: Annotated[Literal["json", "csv"], Query(description="csv: for the bank's systems")] = "json",
):
    async with ctx.engines.reader.connect() as conn:
        batch = await service.batch_out(conn, await service.load_batch(conn, batch_id))
    if format == "csv":
        return _csv_response(batch)
    return batch


@router.post(
    "/settlements/{batch_id}/results", response_model=SettlementBatch, responses=responses(400, 401, 403, 404, 409, 422)
)
async def report_settlement_results(
    batch_id: Annotated[str, StringConstraints(max_length=40)],
    body: Results,
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require("auditor")),
):
    """The bank reports what it did with each instruction. An executed instruction stays executed (a
    different report is 409; the same one again changes nothing); a failed one may later be executed."""
    for r in body.results:
        if r.status == "executed" and not r.bank_reference:
            raise Unprocessable(
                f"{r.instruction_id}: an executed instruction needs its bank_reference.", "invalid_field"
            )

    async def op(tx):
        return 200, await service.report_results(tx, batch_id, body.results)

    return await mutate(ctx, request, who, body, op)


@router.post(
    "/bank-statements",
    status_code=201,
    openapi_extra=CSV_REQUEST,
    response_model=BankStatementMatch,
    responses=responses(400, 401, 403, 413, 415, 422),
)
async def upload_bank_statement(
    request: Request, ctx: AppContext = Depends(get_ctx), who: Principal = Depends(require("auditor"))
):
    """Upload the escrow account's statement (text/csv); the answer matches every line to the ledger
    and lists what is on one side only. A malformed line is a 422 naming it, and nothing is stored."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("text/csv", "text/plain"):
        raise UnsupportedMediaType("The statement must be sent as text/csv.")
    raw = await request.body()
    lines = statements.parse(raw)
    async with ctx.engines.reader.connect() as conn:
        async with conn.begin():
            result = await statements.match(conn, lines, ctx.settings.settlement_timezone)

    async def op(tx):
        return 201, await statements.store(tx, raw, result)

    key = request.headers.get("idempotency-key")
    if key is None:
        status, out = await ctx.writer.run(op)
        return json_response(status, out)
    digest = fingerprint_of("POST", request.url.path, hashlib.sha256(raw).hexdigest())
    status, out, replayed = await run_write(ctx, who.caller, checked_key(key), digest, op)
    return json_response(status, out, replayed)


@router.get(
    "/bank-statements/{statement_id}", response_model=BankStatementMatch, responses=responses(401, 403, 404, 422)
)
async def get_bank_statement(
    statement_id: Annotated[str, StringConstraints(max_length=40)],
    ctx: AppContext = Depends(get_ctx),
    who: Principal = Depends(require(*READERS)),
):
    """A stored statement's matching, as it was answered when uploaded."""
    async with ctx.engines.reader.connect() as conn:
        return await statements.load(conn, statement_id)
