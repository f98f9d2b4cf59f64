"""The errors a call raises: every one carries the HTTP status, the service's error code and its
message (which names the field and the problem).

DotcosError            any answer that is not a success
├── BadRequest         400, 413, 415, 422: the request cannot be served as sent
├── NotFound           404: unknown collection, id, or version
│   └── Gone           410: a scroll's version is no longer served; start it again
├── Conflict           409: no served version was built with the model asked for
└── Unavailable        503: the service cannot take it now (retry_after: seconds it suggests)
"""

from __future__ import annotations


class DotcosError(Exception):
    """An answer that is not a success."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class BadRequest(DotcosError):
    """The request cannot be served as sent (the message names the field)."""


class NotFound(DotcosError):
    """An unknown collection, id or version."""


class Gone(NotFound):
    """A scroll cursor whose version is no longer served: start the scroll again."""


class Conflict(DotcosError):
    """The request names a model no served version was built with."""


class Unavailable(DotcosError):
    """The service cannot take the request now; `retry_after` is the wait it suggests (seconds)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


BY_STATUS: dict[int, type[DotcosError]] = {
    400: BadRequest,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: BadRequest,
    415: BadRequest,
    422: BadRequest,
}


def error_of(status: int, body: object, retry_after: float | None) -> DotcosError:
    """The exception for an error answer (its JSON body `{"error": {"code", "message"}}`)."""
    detail = body.get("error") if isinstance(body, dict) else None
    code = str(detail.get("code", "error")) if isinstance(detail, dict) else "error"
    message = str(detail.get("message", "")) if isinstance(detail, dict) else str(body)[:200]
    if status == 503:
        return Unavailable(status, code, message, retry_after)
    return BY_STATUS.get(status, DotcosError)(status, code, message)
