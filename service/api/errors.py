"""The one place errors become HTTP: status codes and the JSON error body."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from index_builder.contract.errors import ArtifactError, DotcosError, InputError, NotFoundError
from service.api.schemas import ErrorBody
from service.core.errors import TooLarge, Unavailable

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "1"
STATUS_BY_ERROR: list[tuple[type[DotcosError], int]] = [
    (TooLarge, 413), (InputError, 400), (NotFoundError, 404), (Unavailable, 503), (ArtifactError, 503),
]
ERROR_DESCRIPTIONS = {400: "bad input", 401: "admin token missing", 403: "admin token rejected",
                      404: "unknown collection or id", 413: "too large", 422: "malformed body",
                      503: "unavailable"}
QUERY_ERRORS = (400, 404, 413, 422, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can actually return (all with ErrorBody)."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


def validation_response(errors: Sequence[Any]) -> Response:
    """422 naming the first field pydantic rejected, with what came."""
    first = errors[0]
    message = f"{_field(tuple(first.get('loc', ())))}: {first.get('msg', 'invalid')}"
    if "input" in first and first.get("type") != "missing":
        message += f" (got {str(first['input'])[:80]!r})"
    return error_response(422, "validation_error", message)


def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc.errors())


def dotcos_response(exc: DotcosError) -> Response:
    """The status and body of a DotcosError."""
    status = next((s for kind, s in STATUS_BY_ERROR if isinstance(exc, kind)), 500)
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return error_response(status, exc.code, str(exc), headers)


def _dotcos(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DotcosError)
    return dotcos_response(exc)


def http_response(exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden",
            413: "too_large"}
    return error_response(exc.status_code, code.get(exc.status_code, "http_error"), str(exc.detail),
                          dict(exc.headers) if exc.headers else None)


def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return http_response(exc)


def unexpected_response(method: str, path: str) -> Response:
    """500 for a bug: the traceback goes to the log (call inside the except block), not to the client."""
    log.exception("unhandled error on %s %s", method, path)
    return error_response(500, "internal_error", "internal error; the server log has the details")


def _unexpected(request: Request, exc: Exception) -> Response:
    return unexpected_response(request.method, request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(DotcosError, _dotcos)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
