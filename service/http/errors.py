"""One exception hierarchy for every business error, and the handlers that shape SPEC §5's body.

Each class carries its HTTP status and a stable snake_case code; routes raise them and one handler
turns them into `{"error": {"code", "message"}}`. Bad input is always a 4xx, never a 500.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("escrow")


class EscrowError(Exception):
    """A business error: its HTTP status and stable code are the class's, given once where it is declared
    (`class NotFound(EscrowError, status=404, code="not_found")`); a raise may give a finer code."""

    status_code = 400
    code = "bad_request"

    def __init_subclass__(cls, status: int | None = None, code: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.status_code = status or cls.status_code  # a subclass without them keeps its parent's (or its own)
        cls.code = code or cls.code

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BadRequest(EscrowError, status=400, code="bad_request"): ...


class Unauthorized(EscrowError, status=401, code="unauthorized"): ...


class Forbidden(EscrowError, status=403, code="forbidden"): ...


class NotFound(EscrowError, status=404, code="not_found"): ...


class Conflict(EscrowError, status=409, code="conflict"): ...


class Unprocessable(EscrowError, status=422, code="invalid_field"): ...


class TooManyRequests(EscrowError, status=429, code="rate_limited"): ...


class Unavailable(EscrowError, status=503, code="unavailable"): ...


def error_body(code: str, message: str) -> dict:
    """SPEC §5's error body, the one shape of every error answer (FastAPI handlers, the body-limit
    middleware, the redemption fast path): `{"error": {"code", "message"}}`."""
    return {"error": {"code": code, "message": message}}


def error_answer(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, message) for an exception a request raised: a business error as it says, anything
    else a logged 500 that promises nothing changed (each write is one transaction)."""
    if isinstance(exc, EscrowError):
        return exc.status_code, exc.code, exc.message
    log.error("unexpected error", exc_info=exc)
    return 500, "internal_error", "An unexpected error occurred; nothing was changed."


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    return Response(
        orjson.dumps(error_body(code, message)), status_code=status, headers=headers, media_type="application/json"
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable snake_case code, e.g. `card_not_found`")
    message: str = Field(description="A sentence for people")


class ErrorBody(BaseModel):
    """Every error answer (SPEC §5): `{"error": {"code", "message"}}`. One component in /openapi.json."""

    error: ErrorDetail


_ERROR_TEXT = {
    400: "Malformed request",
    401: "No or bad token",
    403: "Role may not do this",
    404: "Not found or not yours",
    409: "State conflict",
    422: "Field out of range",
    429: "Rate limited",
}


ERROR_REF = "#/components/schemas/ErrorBody"


def responses(*statuses: int) -> dict:
    """The `responses=` of a route: for each status it may answer, the one shared error body (JSON even
    on a route whose success answer is text)."""
    content = {"application/json": {"schema": {"$ref": ERROR_REF}}}
    return {s: {"description": _ERROR_TEXT.get(s, "Error"), "content": content} for s in statuses}


def _document_error_body(app: FastAPI) -> None:
    """/openapi.json holds `ErrorBody` once, and FastAPI's default 422 (`HTTPValidationError`, a body this
    service never sends) becomes the error body the validation handler does send."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas["ErrorBody"] = body
        for operation in (op for ops in document.get("paths", {}).values() for op in ops.values()):
            answer = operation.get("responses", {}).get("422")
            if answer and "HTTPValidationError" in str(answer.get("content")):
                operation["responses"]["422"] = responses(422)[422]
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    for err in errors:
        if err.get("type") in ("json_invalid", "json_type"):
            return 400, "malformed_json", "The request body is not valid JSON."
    first = errors[0] if errors else {}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = first.get("msg", "invalid input")
    if first.get("type") == "missing" and first.get("loc", ("",))[0] == "body" and len(first.get("loc", ())) == 1:
        return 400, "missing_body", "A JSON body is required."
    if first.get("type") in ("model_attributes_type", "dict_type") and tuple(first.get("loc", ())) == ("body",):
        return 400, "malformed_body", "The request body must be a JSON object."
    return 422, "invalid_field", f"{loc or 'input'}: {msg}"


def install_error_handlers(app: FastAPI) -> None:
    _document_error_body(app)

    @app.exception_handler(EscrowError)
    @app.exception_handler(Exception)
    async def _raised(_: Request, exc: Exception):
        return error_response(*error_answer(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        status, code, message = _validation_message(exc)
        return error_response(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "body_too_large"}
        code = codes.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = "No such resource."
        elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            code, message = "malformed_json", "The request body is not valid JSON."  # too deep, or a number too long
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))
