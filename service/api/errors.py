"""The one place errors become HTTP: status codes and the JSON error body.

`Reply` is a finished HTTP answer without any framework in it; the handlers, the ASGI front and
the FastAPI exception handlers all build their answers (and every error body) here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from index_builder.artifact.errors import ArtifactError, DotcosError, InputError, NotFoundError
from service.api.schemas import ErrorBody
from service.core.errors import Conflict, Gone, TooLarge, Unavailable

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "1"
STATUS_BY_ERROR: list[tuple[type[DotcosError], int]] = [
    (TooLarge, 413),
    (InputError, 400),
    (Gone, 410),
    (NotFoundError, 404),
    (Conflict, 409),
    (Unavailable, 503),
    (ArtifactError, 503),
]
ERROR_DESCRIPTIONS = {
    400: "bad input",
    401: "admin token missing",
    403: "admin token rejected",
    404: "unknown collection, id or version (and every admin route while DOTCOS_ADMIN_TOKEN is unset)",
    409: "a model no served version was built with (the message names the served models)",
    410: "a scroll cursor whose version is no longer served: start the scroll again",
    413: "too large",
    415: "a body that is not JSON (or, on the searches, raw float32)",
    422: "malformed body",
    503: "unavailable",
}
QUERY_ERRORS = (400, 404, 413, 415, 422, 503)
PINNED_ERRORS = (*QUERY_ERRORS, 409)
"""The routes that take version, model and route_key: a model no version serves is a 409."""
JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """Status, JSON body and extra headers of an answer; `metric` (and the arm) label its metrics."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None
    metric: str = ""
    collection: str = ""
    arm: str = ""
    """The rollout arm that answered (with its collection), for the per-arm metrics."""

    @classmethod
    def json(
        cls,
        content: object,
        status: int = 200,
        headers: dict[str, str] | None = None,
        metric: str = "",
        arm: tuple[str, str] = ("", ""),
    ) -> Reply:
        return cls(status, orjson.dumps(content), headers, metric, *arm)

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=JSON, headers=self.headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can actually return (all with ErrorBody)."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def error_reply(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply.json({"error": {"code": code, "message": message}}, status, headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return error_reply(status, code, message, headers).response()


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


VECTOR_FIELDS = frozenset({"vector", "vectors", "positive", "negative"})
"""Body fields holding vectors: a message never repeats what they hold."""


def validation_reply(errors: Sequence[Any]) -> Reply:
    """422 naming the first field pydantic rejected, with what came (never bytes or vector values)."""
    first = errors[0]
    loc = tuple(p for p in first.get("loc", ()) if p != "body")
    message = f"{_field(loc)}: {first.get('msg', 'invalid')}"
    if first.get("type") == "json_invalid":
        message = f"body: not valid JSON ({first.get('ctx', {}).get('error', 'unreadable')})"
    elif "input" in first and first.get("type") != "missing" and not (loc and loc[0] in VECTOR_FIELDS):
        message += f" (got {_shown(first['input'])})"
    return error_reply(422, "validation_error", message)


def _shown(value: object) -> str:
    """What came, as a person reads it: a short scalar, or the kind and size of a container."""
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    if isinstance(value, str):
        return f'"{value[:60]}"' + ("..." if len(value) > 60 else "")
    return str(value)[:60]


def dotcos_reply(exc: DotcosError) -> Reply:
    """The status and body of a DotcosError."""
    status = next((s for kind, s in STATUS_BY_ERROR if isinstance(exc, kind)), 500)
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return error_reply(status, exc.code, str(exc), headers)


def unexpected_reply(method: str, path: str) -> Reply:
    """500 for a bug: the traceback goes to the log (call inside the except block), not to the client."""
    log.exception("unhandled error on %s %s", method, path)
    return error_reply(500, "internal_error", "internal error; the server log has the details")


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden", 413: "too_large"}
"""Error codes of the statuses FastAPI itself raises."""


def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_reply(exc.errors()).response()


def _dotcos(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DotcosError)
    return dotcos_reply(exc).response()


def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(
        exc.status_code,
        HTTP_CODES.get(exc.status_code, "http_error"),
        str(exc.detail),
        dict(exc.headers) if exc.headers else None,
    )


def _unexpected(request: Request, exc: Exception) -> Response:
    return unexpected_reply(request.method, request.url.path).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(DotcosError, _dotcos)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
