"""Bank statements (银行对账单): the custodian bank's record of the escrow account, matched to the ledger.

This module owns parsing a statement (CSV `date,direction,amount,reference`, amounts in integer fen),
matching every line, and storing what matching found. A `credit` line is money paid in: it carries
the purchase's payment route as `method:reference` (e.g. `wechat_pay:wx-4f2a`); the bare reference
is accepted when exactly one card carries it. A `debit` line is money paid out: it carries the
settlement instruction's id (`pay_…` for a payout, `rfi_…` for a refund).

The ledger side for the statement's days (in the settlement time zone) is every purchase made on
those days and every instruction of those days' batches. What is on one side only is reported, both
ways, with the instructions still open or failed; and the bank's net movement over the days is set
against the ledger's.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import date

import orjson

from service.core.ids import new_id
from service.db.writer import Tx
from service.http.errors import NotFound, Unprocessable
from service.settlements import repository
from service.settlements.service import dated_instruction_out, day_bounds, day_entries, ledger_totals, unsettled, zone

HEADER = ["date", "direction", "amount", "reference"]
MAX_LINES = 20_000
MAX_FEN = 10**13
OPEN_LISTED = 1000  # open and failed instructions listed in an answer
_FEN = re.compile(r"[0-9]{1,14}")


def _bad(line: int, why: str) -> Unprocessable:
    return Unprocessable(f"line {line}: {why}", "malformed_statement_line")


def parse(body: bytes) -> list[dict]:
    """The statement's lines, or a 422 naming the first malformed line (line 1 is the header)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Unprocessable("The statement must be UTF-8 text.", "malformed_statement") from None
    if "\x00" in text:
        raise Unprocessable("The statement must not contain the NUL character.", "malformed_statement")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or [c.strip().lower() for c in rows[0]] != HEADER:
        raise _bad(1, "the header must be exactly 'date,direction,amount,reference'")
    lines = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue  # blank lines (a trailing newline) say nothing
        if len(lines) >= MAX_LINES:
            raise _bad(n, f"a statement holds at most {MAX_LINES} lines; upload the rest as another statement")
        if len(row) != 4:
            raise _bad(n, f"expected 4 fields (date,direction,amount,reference), found {len(row)}")
        day, direction, amount, reference = (c.strip() for c in row)
        try:
            if len(day) != 10:
                raise ValueError
            d = date.fromisoformat(day)
        except ValueError:
            raise _bad(n, f"date {day[:20]!r} is not YYYY-MM-DD") from None
        direction = direction.lower()
        if direction not in ("credit", "debit"):
            raise _bad(n, f"direction must be 'credit' or 'debit', not {direction[:20]!r}")
        if "." in amount or "," in amount:
            raise _bad(n, f"amount {amount[:20]!r} must be integer fen (分), with no decimal point")
        if not _FEN.fullmatch(amount) or not 0 < int(amount) < MAX_FEN:
            raise _bad(n, f"amount {amount[:20]!r} must be a positive whole number of fen")
        if not 1 <= len(reference) <= 160 or not reference.isprintable():
            raise _bad(n, "reference must be 1 to 160 printable characters")
        lines.append(
            {"line": n, "date": d.isoformat(), "direction": direction, "amount": int(amount), "reference": reference}
        )
    if not lines:
        raise Unprocessable("The statement has a header and no lines.", "empty_statement")
    return lines


async def _cards_by_route(conn, routes: list[tuple[str | None, str]]) -> dict[tuple[str | None, str], list]:
    """Cards by (method, reference), and by (None, reference) for a bare reference. A (method, reference)
    pair is looked up as a pair: the unique index on the payment route answers it."""
    out: dict[tuple[str | None, str], list] = {}
    pairs = sorted({r for r in routes if r[0] is not None})
    bare = sorted({ref for method, ref in routes if method is None})
    seen = set()
    for r in await repository.cards_by_route(conn, pairs, bare):
        if r.id in seen:
            continue
        seen.add(r.id)
        out.setdefault((r.payment_method, r.payment_reference), []).append(r)
        out.setdefault((None, r.payment_reference), []).append(r)
    return out


def _route(reference: str) -> tuple[str | None, str]:
    method, sep, ref = reference.partition(":")
    return (method, ref) if sep and method and ref else (None, reference)


async def match(conn, lines: list[dict], tz_name: str) -> dict:
    tz = zone(tz_name)
    date_from = min(x["date"] for x in lines)
    date_to = max(x["date"] for x in lines)
    start = day_bounds(date.fromisoformat(date_from), tz)[0]
    end = day_bounds(date.fromisoformat(date_to), tz)[1]

    # The ledger side: purchases of those days, instructions of those days' batches.
    purchases = {}
    for r in await day_entries(conn, start, end, ("purchase",)):
        purchases[r.card_id] = {
            "type": "purchase",
            "card_id": r.card_id,
            "merchant_id": r.merchant_id,
            "amount": orjson.loads(r.canonical)["amount"],
            "ledger_seq": int(r.seq),
        }
    batch_ids = await repository.batch_ids_between(conn, date_from, date_to)
    expected_instructions = await repository.dated_instructions_of_batches(conn, batch_ids)

    credit_routes = [_route(x["reference"]) for x in lines if x["direction"] == "credit"]
    # a reference that itself holds a colon may also be given bare
    credit_routes += [(None, x["reference"]) for x in lines if x["direction"] == "credit" and ":" in x["reference"]]
    cards = await _cards_by_route(conn, credit_routes)
    debit_ids = sorted({x["reference"] for x in lines if x["direction"] == "debit"} - set(expected_instructions))
    other_instructions = await repository.dated_instructions(conn, debit_ids)

    matched, unmatched_lines = [], []
    taken: dict[str, int] = {}  # ledger item -> the line that matched it
    for x in lines:
        if x["direction"] == "credit":
            found = cards.get(_route(x["reference"])) or cards.get((None, x["reference"]), [])
            if len(found) != 1:
                why = (
                    "no purchase carries this payment reference"
                    if not found
                    else "several cards carry this reference; give it as method:reference"
                )
                unmatched_lines.append({**x, "reason": why})
                continue
            card = found[0]
            key, amount = "card:" + card.id, int(card.price)
            item = {"type": "purchase", "card_id": card.id, "amount": amount, "ledger_seq": int(card.purchase_seq)}
        else:
            inst = expected_instructions.get(x["reference"]) or other_instructions.get(x["reference"])
            if inst is None:
                unmatched_lines.append({**x, "reason": "no settlement instruction has this id"})
                continue
            key, amount = "inst:" + inst.id, int(inst.amount)
            item = {
                "type": inst.kind,
                "instruction_id": inst.id,
                "batch_id": inst.batch_id,
                "date": inst.date,
                "amount": amount,
                "status": inst.status,
            }
        if key in taken:
            unmatched_lines.append({**x, "reason": f"line {taken[key]} already matched this ledger item"})
        elif amount != x["amount"]:
            unmatched_lines.append({**x, "reason": f"the ledger states {amount} fen for this reference"})
        else:
            taken[key] = x["line"]
            matched.append(
                {
                    "line": x["line"],
                    "date": x["date"],
                    "direction": x["direction"],
                    "amount": x["amount"],
                    "reference": x["reference"],
                    "ledger_item": item,
                }
            )

    unmatched_items = []
    for card_id, p in purchases.items():
        if "card:" + card_id not in taken:
            unmatched_items.append(p)
    for inst_id, r in sorted(expected_instructions.items()):
        if "inst:" + inst_id not in taken:
            unmatched_items.append(
                {
                    "type": r.kind,
                    "instruction_id": inst_id,
                    "batch_id": r.batch_id,
                    "date": r.date,
                    "amount": int(r.amount),
                    "status": r.status,
                }
            )

    credits = sum(x["amount"] for x in lines if x["direction"] == "credit")
    debits = sum(x["amount"] for x in lines if x["direction"] == "debit")
    ledger_credits = sum(p["amount"] for p in purchases.values())
    ledger_debits = sum(int(r.amount) for r in expected_instructions.values())
    open_rows = await repository.unexecuted_instructions(conn, OPEN_LISTED)
    totals = await ledger_totals(conn)
    awaiting = await unsettled(conn)
    return {
        "date_from": date_from,
        "date_to": date_to,
        "timezone": tz_name,
        "currency": "CNY",
        "lines": len(lines),
        "matched": matched,
        "unmatched_statement_lines": unmatched_lines,
        "unmatched_ledger_items": unmatched_items,
        # Every instruction the bank has not reported executed, whichever day's: still owed. One the
        # statement nevertheless shows paid is flagged: the bank's report and its account disagree.
        "open_instructions": [{**dated_instruction_out(r), "on_statement": "inst:" + r.id in taken} for r in open_rows],
        "balance": {
            "bank": {"credits": credits, "debits": debits, "net": credits - debits},
            "ledger": {"credits": ledger_credits, "debits": ledger_debits, "net": ledger_credits - ledger_debits},
            "difference": (credits - debits) - (ledger_credits - ledger_debits),
            "agrees": credits == ledger_credits and debits == ledger_debits,
            # The whole account as the ledger sees it: escrow, plus what was released or refunded and
            # the bank has not yet reported paid.
            "ledger_escrow": totals["escrow"],
            "ledger_awaiting_payment": awaiting,
            "ledger_account_balance": totals["escrow"] + awaiting,
        },
        "complete": not unmatched_lines and not unmatched_items,
    }


async def store(tx: Tx, body: bytes, result: dict) -> dict:
    sid = new_id("bst")
    digest = hashlib.sha256(body).hexdigest()
    out = {"id": sid, **result, "digest": digest}
    seq = tx.append(
        "bank_statement",
        statement_id=sid,
        date_from=result["date_from"],
        date_to=result["date_to"],
        lines=result["lines"],
        matched=len(result["matched"]),
        unmatched_statement_lines=len(result["unmatched_statement_lines"]),
        unmatched_ledger_items=len(result["unmatched_ledger_items"]),
        digest=digest,
    )
    out["ledger_seq"] = seq
    out["created_at"] = tx.now.isoformat().replace("+00:00", "Z")
    await repository.insert_statement(
        tx.conn,
        id=sid,
        date_from=result["date_from"],
        date_to=result["date_to"],
        lines=result["lines"],
        digest=digest,
        result=orjson.dumps(out).decode(),
        ledger_seq=seq,
        created_at=tx.now,
    )
    return out


async def load(conn, statement_id: str) -> dict:
    result = await repository.statement_result(conn, statement_id)
    if result is None:
        raise NotFound("No such bank statement.", "statement_not_found")
    return orjson.loads(result)
