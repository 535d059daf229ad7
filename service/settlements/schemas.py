"""Custody's request and answer models: closing a day, the bank's results, batches, instructions, statements.

An instruction is a payout to a merchant (`pay_…`) or a refund to a card's payment route (`rfi_…`);
only a refund names a card and a route. Amounts are integer fen."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from service.cards.schemas import FenValue, Time
from service.http.common import Strict

Ref = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"^[^\x00]*$")]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=r"^[^\x00]*$")]
Day = Annotated[str, Field(description="A calendar day YYYY-MM-DD in ESCROW_SETTLEMENT_TIMEZONE")]
InstructionStatus = Literal["open", "executed", "failed"]


class CloseDay(Strict):
    date: Annotated[
        str,
        StringConstraints(min_length=10, max_length=10),
        Field(description="A calendar day YYYY-MM-DD in ESCROW_SETTLEMENT_TIMEZONE (default Asia/Shanghai)"),
    ]


class Result(Strict):
    instruction_id: Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[^\x00]*$")]
    status: Literal["executed", "failed"]
    bank_reference: Ref | None = None
    reason: Reason | None = None


class Results(Strict):
    results: Annotated[list[Result], Field(max_length=10_000)]


# ---------------------------------------------------------------- answers


class Instruction(Strict):
    id: str
    merchant_id: str
    amount: FenValue
    status: InstructionStatus
    bank_reference: str | None = Field(description="The bank's reference, once reported executed")
    reason: str | None = Field(description="Why the bank failed it")
    reported_at: Time | None


class Payout(Instruction):
    kind: Literal["payout"]


class RefundInstruction(Instruction):
    kind: Literal["refund"]
    card_id: str
    method: str = Field(description="The card's payment method: the refund goes back by it")
    reference: str = Field(description="The card's payment reference")


class ListedPayout(Payout):
    batch_id: str
    date: Day


class ListedRefund(RefundInstruction):
    batch_id: str
    date: Day


ListedInstruction = Annotated[ListedPayout | ListedRefund, Field(discriminator="kind")]


class BatchTotals(Strict):
    payouts: FenValue
    refunds: FenValue
    total: FenValue
    payouts_count: int
    refunds_count: int


class BatchSummary(Strict):
    id: str
    date: Day
    currency: str
    created_at: Time
    ledger_seq: int
    digest: str = Field(description="SHA-256 (hex) of the batch's canonical body, stated in its ledger entry")
    totals: BatchTotals


class SettlementBatch(BatchSummary):
    payouts: list[Payout]
    refunds: list[RefundInstruction]


class BatchPage(Strict):
    items: list[BatchSummary]
    next_cursor: str | None = Field(description="The last date of the page, while more follow")


class InstructionPage(Strict):
    items: list[ListedInstruction]
    next_cursor: str | None = Field(description="The last instruction id of the page, while more follow")


# ---------------------------------------------------------------- bank statements


class PurchaseItem(Strict):
    type: Literal["purchase"]
    card_id: str
    amount: FenValue
    ledger_seq: int


class UnmatchedPurchase(PurchaseItem):
    merchant_id: str


class InstructionItem(Strict):
    type: Literal["payout", "refund"]
    instruction_id: str
    batch_id: str
    date: Day
    amount: FenValue
    status: InstructionStatus


class StatementLine(Strict):
    line: int = Field(description="Line number in the uploaded CSV (the header is line 1)")
    date: Day
    direction: Literal["credit", "debit"]
    amount: FenValue
    reference: str


class MatchedLine(StatementLine):
    ledger_item: Annotated[PurchaseItem | InstructionItem, Field(discriminator="type")]


class UnmatchedLine(StatementLine):
    reason: str


class OpenPayout(ListedPayout):
    on_statement: bool = Field(description="The statement shows it paid though the bank has not reported it executed")


class OpenRefund(ListedRefund):
    on_statement: bool = Field(description="The statement shows it paid though the bank has not reported it executed")


class Movement(Strict):
    credits: FenValue
    debits: FenValue
    net: FenValue


class StatementBalance(Strict):
    bank: Movement
    ledger: Movement
    difference: Annotated[int, Field(description="The bank's net minus the ledger's, fen")]
    agrees: bool
    ledger_escrow: FenValue
    ledger_awaiting_payment: Annotated[int, Field(description="Released or refunded, not yet reported paid, fen")]
    ledger_account_balance: Annotated[int, Field(description="What the ledger expects the account to hold, fen")]


class BankStatementMatch(Strict):
    id: str
    date_from: Day
    date_to: Day
    timezone: str
    currency: str
    lines: int
    matched: list[MatchedLine]
    unmatched_statement_lines: list[UnmatchedLine]
    unmatched_ledger_items: list[Annotated[UnmatchedPurchase | InstructionItem, Field(discriminator="type")]]
    open_instructions: list[Annotated[OpenPayout | OpenRefund, Field(discriminator="kind")]]
    balance: StatementBalance
    complete: bool = Field(description="Every line matched and every ledger item found")
    digest: str = Field(description="SHA-256 (hex) of the uploaded statement")
    ledger_seq: int
    created_at: Time


CSV_REQUEST = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {
                "schema": {"type": "string", "description": "date,direction,amount,reference (amount in integer fen)"}
            }
        },
    }
}
BATCH_AS_CSV = {
    200: {
        "description": "The batch (JSON, or CSV with ?format=csv)",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}
