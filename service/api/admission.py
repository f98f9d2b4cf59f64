"""Refuse work at the door when the search queue is full, before the body is read or parsed.

Shed requests must be cheap: a 503 that first parses a 384-float JSON body costs as much event
loop time as a search, and under a flood of retries that starves the requests already admitted.
The core's own admission check stays authoritative; this gate only turns the obvious cases away early.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import RETRY_AFTER_SECONDS, error_response
from service.api.handlers import ROUTES
from service.core.searcher import Searcher

GATED_SUFFIXES = tuple(f"/{suffix}" for suffix in ROUTES)


class AdmissionGate:
    def __init__(self, app: ASGIApp, searcher: Searcher) -> None:
        self.app = app
        self.searcher = searcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and self.searcher.saturated()
            and scope["path"].startswith("/v1/collections/")
            and scope["path"].endswith(GATED_SUFFIXES)
        ):
            response = error_response(
                503,
                "unavailable",
                self.searcher.overload_message(),
                {"Retry-After": RETRY_AFTER_SECONDS, "Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
