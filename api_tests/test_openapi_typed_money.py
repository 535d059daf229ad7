"""The OpenAPI document types every success answer of cards, redemptions, custody and the ledger.

A client generated from `/openapi.json` gets models, not untyped dicts: every 2xx answer of these
operations names a schema, the models say money is integer fen, and an answer the service gives
really has the shape its schema states (the models forbid fields they do not name)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from api_tests.factories import ask, buy_card, create_merchant, publish_count, register_consumer
from api_tests.test_settlements import a_day
from service.cards.schemas import Card, PurchasedCard, Refund, RefundQuote
from service.ledger_api import schemas as ledger_schemas
from service.redemptions.schemas import AskedRedemption, ConfirmedRedemption, Redemption
from service.settlements.schemas import BankStatementMatch, BatchPage, InstructionPage, SettlementBatch

PREFIXES = ("/v1/cards", "/v1/redemptions", "/v1/settlements", "/v1/bank-statements", "/v1/ledger", "/log")


@pytest.fixture(scope="module")
def document(app):
    return app.openapi()


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def success_answers(document: dict, prefixes: tuple[str, ...] = PREFIXES):
    for path, item in document["paths"].items():
        if not path.startswith(prefixes):
            continue
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if status.startswith("2"):
                    yield f"{method.upper()} {path} {status}", answer


def test_every_success_answer_of_these_operations_has_a_schema(document):
    answers = dict(success_answers(document))
    assert len(answers) >= 25, sorted(answers)
    untyped = [
        name
        for name, answer in answers.items()
        if not answer.get("content") or any(not media.get("schema") for media in answer["content"].values())
    ]
    assert untyped == []


def test_json_answers_are_named_models_that_forbid_unknown_fields(document):
    for name, answer in success_answers(document):
        json = answer["content"].get("application/json")
        if json is None:
            continue
        assert "$ref" in json["schema"], name
        model = resolve(document, json["schema"])
        assert model["type"] == "object" and model["additionalProperties"] is False, name


def test_the_card_states_its_money_as_integer_fen(document):
    card = resolve(
        document,
        document["paths"]["/v1/cards/{card_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
    )
    assert card["properties"]["price"]["type"] == "integer"
    assert "fen" in card["properties"]["price"]["description"]
    balance = resolve(document, card["properties"]["balance"])
    for field in ("escrow", "held", "available", "released", "refunded"):
        assert balance["properties"][field]["type"] == "integer", field
        assert "fen" in balance["properties"][field]["description"], field
    assert set(balance["required"]) == set(balance["properties"])


def test_redemption_and_refund_answers_state_fen_as_integers(document):
    def model(path: str, method: str, status: str) -> dict:
        schema = document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        return resolve(document, schema)

    asked = model("/v1/cards/{card_id}/redemptions", "post", "201")
    assert asked["properties"]["hold_amount"]["type"] == "integer"
    confirmed = model("/v1/redemptions/{redemption_id}/confirm", "post", "200")
    release = confirmed["properties"]["release_amount"]
    assert {"type": "integer"} in release["anyOf"] and {"type": "null"} in release["anyOf"]
    refund = model("/v1/cards/{card_id}/refund", "post", "200")
    assert refund["properties"]["amount"]["type"] == "integer"
    assert refund["properties"]["merchant_share"]["type"] == "integer"
    batch = model("/v1/settlements/{batch_id}", "get", "200")
    totals = resolve(document, batch["properties"]["totals"])
    assert all(totals["properties"][k]["type"] == "integer" for k in ("payouts", "refunds", "total"))
    statement = model("/v1/bank-statements", "post", "201")
    assert resolve(document, statement["properties"]["balance"])["properties"]["difference"]["type"] == "integer"


def test_non_json_answers_are_typed_as_text_or_bytes(document):
    paths = document["paths"]
    receipt = paths["/v1/ledger/entries/{seq}/receipt"]["get"]["responses"]["200"]["content"]
    assert receipt["text/plain"]["schema"]["type"] == "string"
    assert paths["/log/checkpoint"]["get"]["responses"]["200"]["content"]["text/plain"]["schema"]["type"] == "string"
    tile = paths["/log/tile/{level}/{rest}"]["get"]["responses"]["200"]["content"]["application/octet-stream"]
    assert tile["schema"] == {"type": "string", "format": "binary"}
    batch = paths["/v1/settlements/{batch_id}"]["get"]["responses"]["200"]["content"]
    assert batch["text/csv"]["schema"]["type"] == "string"
    upload = paths["/v1/bank-statements"]["post"]["requestBody"]["content"]
    assert upload["text/csv"]["schema"]["type"] == "string"


async def test_a_card_read_back_through_its_model_keeps_every_field(client):
    """The response model filters: the card read back has every field the purchase answered."""
    merchant = await create_merchant(client)
    product = await publish_count(client, merchant, price=100_000, uses=10)
    consumer = await register_consumer(client)
    bought = await buy_card(client, consumer, product)
    read = await client.get(f"/v1/cards/{bought['id']}", headers=consumer["headers"])
    assert read.status_code == 200
    card = read.json()
    assert set(card) == set(bought) - {"ledger_seq"}
    assert (
        card["balance"]
        == bought["balance"]
        == {
            "escrow": 100_000,
            "held": 0,
            "available": 100_000,
            "released": 0,
            "refunded": 0,
            "units_total": 10,
            "units_used": 0,
            "units_held": 0,
            "units_left": 10,
            "units_available": 10,
        }
    )


async def test_every_answer_of_a_settled_day_is_exactly_its_model(client, document):
    """A day of purchases, redemptions, a quit refund and a default, settled, reported and reconciled: each
    success answer on the way validates against the model its operation declares (answers written by the
    writer are not filtered by FastAPI, so this is what says the models are exact: they forbid unknown
    fields and require every field they name)."""
    w = await a_day(client)
    day, bank, (card, *_) = w["day"], w["bank"], w["cards"]
    consumer = await register_consumer(client)
    course = await publish_count(client, w["gym"], price=30_000, uses=3)
    checked: set[str] = set()

    async def expect(model: type[BaseModel], method: str, url: str, party: dict | None, status: int = 200, **kw):
        headers = {**(party["headers"] if party else {}), **kw.pop("headers", {})}
        r = await client.request(method, url, headers=headers, **kw)
        assert r.status_code == status, r.text
        model.model_validate(r.json())
        checked.add(model.__name__)
        return r.json()

    purchase = {"product_id": course["id"], "payment": {"method": "alipay", "reference": "ali-typed-1"}}
    bought = await expect(PurchasedCard, "POST", "/v1/cards", consumer, 201, json=purchase)
    asked = await expect(
        AskedRedemption, "POST", f"/v1/cards/{bought['id']}/redemptions", w["gym"], 201, json={"uses": 1}
    )
    await expect(Redemption, "GET", f"/v1/redemptions/{asked['id']}", consumer)
    await expect(ConfirmedRedemption, "POST", f"/v1/redemptions/{asked['id']}/confirm", consumer)
    rejected = await ask(client, w["gym"], bought, uses=1)
    await expect(Redemption, "POST", f"/v1/redemptions/{rejected['id']}/reject", consumer)
    cancelled = await ask(client, w["gym"], bought, uses=1)
    await expect(Redemption, "POST", f"/v1/redemptions/{cancelled['id']}/cancel", w["gym"])
    await expect(RefundQuote, "GET", f"/v1/cards/{bought['id']}/refund-quote", consumer)
    refunded = await expect(Refund, "POST", f"/v1/cards/{bought['id']}/refund", consumer)
    assert refunded["amount"] + refunded["merchant_share"] == 30_000 - 10_000  # one use of three was released
    await expect(Card, "GET", f"/v1/cards/{card['id']}", bank)

    batch = await expect(SettlementBatch, "POST", "/v1/settlements", bank, 201, json={"date": day.isoformat()})
    assert batch["payouts"] and batch["refunds"]
    await expect(SettlementBatch, "POST", "/v1/settlements", bank, 200, json={"date": day.isoformat()})
    await expect(SettlementBatch, "GET", f"/v1/settlements/{batch['id']}", bank)
    results = {"results": [{"instruction_id": batch["refunds"][0]["id"], "status": "failed", "reason": "closed"}]}
    await expect(SettlementBatch, "POST", f"/v1/settlements/{batch['id']}/results", bank, json=results)
    await expect(BatchPage, "GET", "/v1/settlements", bank)
    listed = await expect(InstructionPage, "GET", "/v1/settlements/instructions", bank)
    assert {i["kind"] for i in listed["items"]} == {"payout", "refund"}
    lines = [(day.isoformat(), "credit", card["price"], f"wechat_pay:{card['payment']['reference']}")]
    lines += [(day.isoformat(), "debit", batch["payouts"][0]["amount"], batch["payouts"][0]["id"])]
    lines += [(day.isoformat(), "debit", 1, "pay_unknown")]
    text = "date,direction,amount,reference\n" + "".join(",".join(map(str, x)) + "\n" for x in lines)
    csv_headers = {"Content-Type": "text/csv"}
    matched = await expect(
        BankStatementMatch, "POST", "/v1/bank-statements", bank, 201, content=text, headers=csv_headers
    )
    assert matched["matched"] and matched["unmatched_statement_lines"] and matched["unmatched_ledger_items"]
    assert matched["open_instructions"]
    await expect(BankStatementMatch, "GET", f"/v1/bank-statements/{matched['id']}", bank)

    checkpoint = await expect(ledger_schemas.SignedCheckpoint, "POST", "/v1/ledger/checkpoints", bank, 201)
    await expect(ledger_schemas.SignedCheckpoint, "GET", "/v1/ledger/checkpoint", None)
    await expect(ledger_schemas.PublicKey, "GET", "/v1/ledger/public-key", None)
    await expect(ledger_schemas.LedgerEntryPage, "GET", "/v1/ledger/entries?limit=5", bank)
    await expect(ledger_schemas.LedgerEntry, "GET", "/v1/ledger/entries/0", bank)
    await expect(ledger_schemas.InclusionProof, "GET", "/v1/ledger/entries/0/proof", None)
    await expect(
        ledger_schemas.ConsistencyProof, "GET", f"/v1/ledger/consistency?first=1&second={checkpoint['tree_size']}", None
    )
    await expect(ledger_schemas.Witnesses, "GET", "/v1/ledger/witnesses", None)
    reconciled = await expect(ledger_schemas.Reconciliation, "GET", "/v1/escrow/reconciliation", bank)
    assert reconciled["consistent"] is True
    declared = {
        answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for _, answer in success_answers(document, PREFIXES + ("/v1/escrow",))
        if "application/json" in answer["content"]
    }
    assert checked == declared
