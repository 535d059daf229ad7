"""Property-based fuzzing of every operation in the app's own OpenAPI document (schemathesis).

Cases are generated from the schema (valid ones, and invalid ones in negative mode) and sent in-process
to the app with every role's token; half of the cases that name an object name a real one, so the
fuzzed bodies reach the business rules and not only the 404. Each answer must pass schemathesis's
checks: no server error, a documented status code and content type, and a body that conforms to the
documented schema (the error body for every 4xx).

Generation is separated from sending: hypothesis draws the cases synchronously, then they are sent
through the test's own event loop (the app's database engines live on it), with httpx's ASGI transport.
"""

from __future__ import annotations

import itertools
import os

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_tests.conftest import record
from api_tests.test_authz_matrix import World, build_world

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ROLES = ("operator", "merchant_a", "consumer_a", "regulator", "auditor", "lender")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# Examples per operation and generation mode: bounded so that the whole run stays well under a minute.
MAX_EXAMPLES = int(os.environ.get("ESCROW_FUZZ_EXAMPLES", "10"))
BASE_URL = "http://escrow.test"


def generate(operation, mode: GenerationMode, n: int) -> list:
    cases: list = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def collect(case):
        cases.append(case)

    try:
        collect()
    except Unsatisfiable:  # negative mode for an operation with nothing to make invalid
        pass
    return cases


def real_ids(w: World) -> dict[str, object]:
    return {
        "card_id": w.card["id"],
        "redemption_id": w.pending["id"],
        "merchant_id": w.parties["merchant_a"]["id"],
        "product_id": w.product["id"],
        "complaint_id": w.complaint["id"],
        "alert_id": w.alert_id,
        "draw_id": w.draw_id,
        "seq": w.entry_seq,
        "batch_id": w.batch_id,
        "statement_id": w.statement_id,
    }


def send_kwargs(case, headers: dict) -> dict:
    """The requests-style keyword arguments schemathesis serializes, as httpx takes them."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    out = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers") or {},
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        out["content" if isinstance(data, (bytes, str)) else "data"] = data
    return out


async def served_schema(client):
    """The document the app serves, fetched in-process without running the app's lifespan (whose shutdown
    would dispose of the test's engines): `schemathesis.openapi.from_asgi` would start and stop it."""
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    return r.json(), schemathesis.openapi.from_dict(r.json())


def has_invalid_inputs(document: dict, operation) -> bool:
    """Negative mode needs a body or a query to make invalid: an unconstrained string path parameter has no invalid
    value, and hypothesis searches for one until it gives up (seconds per operation). Hostile paths are tested in
    test_hostile_input.py."""
    spec = document["paths"][operation.path][operation.method.lower()]
    return "requestBody" in spec or any(p["in"] == "query" for p in spec.get("parameters", []))


async def test_every_operation_survives_fuzzing_with_every_role(client, capsys):
    document, schema = await served_schema(client)
    w = await build_world(client)
    ids = real_ids(w)
    operations = [result.ok() for result in schema.get_all_operations()]
    # the test clock last: moving time forward expires what the other operations would fuzz; before it, what
    # ends the world's tokens (sign-out, key rotation and revocation), so the others are fuzzed signed in
    operations.sort(
        key=lambda op: (
            op.path == "/v1/test/clock",
            op.path.startswith("/v1/keys/") or op.path.endswith("/tokens/current"),
        )
    )
    assert len(operations) >= 45
    generated, sent, failures = 0, 0, []
    rotation = itertools.cycle(ROLES)
    for operation in operations:
        cases = generate(operation, GenerationMode.POSITIVE, MAX_EXAMPLES)
        if has_invalid_inputs(document, operation):
            cases += generate(operation, GenerationMode.NEGATIVE, MAX_EXAMPLES)
        generated += len(cases)
        for i, case in enumerate(cases):
            if i % 2 == 0 and case.path_parameters:
                case.path_parameters = {k: ids.get(k, v) for k, v in case.path_parameters.items()}
            if case.query and isinstance(case.query.get("wait"), (int, float)) and case.query["wait"] > 0.01:
                case.query["wait"] = 0.01  # a valid long-poll would hold the request for up to a minute
            callers = ROLES if operation.method.upper() in WRITES else (next(rotation),)
            for caller in callers:
                response = await client.request(**send_kwargs(case, w.headers(caller)))
                sent += 1
                try:
                    case.validate_response(response, checks=CHECKS)
                except BaseExceptionGroup as exc:  # schemathesis's FailureGroup: report every one, not only the first
                    failures.append(
                        f"{operation.label} as {caller} -> {response.status_code} {response.text[:200]}\n"
                        f"{str(exc)[:1500]}"
                    )
    record("fuzz cases", generated)
    record("fuzz requests", sent)
    with capsys.disabled():
        print(
            f"\nschemathesis: {len(operations)} operations, {generated} cases generated, {sent} requests sent "
            f"(max_examples={MAX_EXAMPLES} per operation and mode), {len(failures)} failures"
        )
    assert not failures, f"{len(failures)} failing cases:\n\n" + "\n\n".join(failures[:15])
