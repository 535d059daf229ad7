"""The OpenAPI contract: every success answer of every operation has a schema, so a client generated from
/openapi.json gets typed models, not untyped dicts; every error answer is the one shared error body."""

from __future__ import annotations

from risk import DEFAULT_POLICY
from service.health.schemas import RiskPolicy

# The domains whose routes must already be typed on every branch (see test_every_success_answer_has_a_schema
# for the whole document).
TYPED_PREFIXES = (
    "/healthz",
    "/v1/ping",
    "/v1/test/",
    "/v1/products",
    "/v1/merchants",
    "/v1/regulators",
    "/v1/auditors",
    "/v1/lenders",
    "/v1/credit/",
    "/v1/consumers",
    "/v1/alerts",
    "/v1/complaints",
    "/v1/keys/",
    "/v1/risk/",
    "/v1/inspections/",
)


async def document(client) -> dict:
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    return r.json()


def untyped_success_answers(spec: dict, prefixes: tuple[str, ...] = ("/",)) -> list[str]:
    """'METHOD path status' of each 2xx answer without a schema (a 204 must then have no content)."""
    bad = []
    for path, operations in spec["paths"].items():
        if not path.startswith(prefixes):
            continue
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                content = answer.get("content")
                if status == "204" and not content:
                    continue
                if not content or not all(media.get("schema") for media in content.values()):
                    bad.append(f"{method.upper()} {path} {status}")
    return bad


async def test_every_success_answer_has_a_schema(client):
    """THE FULL CHECK: every operation of the document, whichever domain it belongs to."""
    bad = untyped_success_answers(await document(client))
    assert not bad, f"{len(bad)} success answers without a schema:\n" + "\n".join(bad)


async def test_every_success_answer_of_the_typed_domains_has_a_schema(client):
    """The same check restricted to products, merchants, parties, credit, consumers, alerts, health,
    complaints, keys and system."""
    spec = await document(client)
    covered = [p for p in spec["paths"] if p.startswith(TYPED_PREFIXES)]
    assert len(covered) >= 30
    bad = untyped_success_answers(spec, TYPED_PREFIXES)
    assert not bad, f"{len(bad)} success answers without a schema:\n" + "\n".join(bad)


async def test_error_answers_share_one_error_body_and_operation_ids_are_route_names(client):
    spec = await document(client)
    schemas = spec["components"]["schemas"]
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert "HTTPValidationError" not in schemas  # a body this service never sends
    ids = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            ids.append(operation["operationId"])
            for status, answer in operation["responses"].items():
                if status[0] in "45":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert "publish_product" in ids and "my_merchant_profile" in ids and "my_consumer_profile" in ids
    assert schemas["ErrorBody"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}


async def test_typed_answers_carry_every_field_the_routes_return(client, operator_headers):
    """A response model filters what it does not name: the risk policy, whose fields live in risk/, is
    pinned to `risk.Policy.to_dict`, and the answer still holds every key."""
    assert set(RiskPolicy.model_fields) == set(DEFAULT_POLICY.to_dict())
    r = await client.get("/v1/risk/policy", headers=operator_headers)
    assert r.status_code == 200, r.text
    assert r.json() == DEFAULT_POLICY.to_dict()
