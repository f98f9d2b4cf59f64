"""The two hot search routes answered straight from ASGI, skipping FastAPI's per-request machinery.

FastAPI's routing, dependency solving and body handling cost about as much event-loop time as
the search itself on small collections. This middleware parses the body with pydantic's Rust
JSON validator and calls the same handler as the routes (`answer_search`), with the same error
bodies; the FastAPI routes stay the documented interface (OpenAPI) and serve when it is off.
"""

from __future__ import annotations

import re

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from index_builder.contract.errors import DotcosError
from service.api.errors import dotcos_response, http_response, validation_response
from service.api.routes import answer_search
from service.api.schemas import BatchSearchRequest, SearchRequest
from service.api.state import AppState

SEARCH_PATH = re.compile(r"^/v1/collections/([^/]+)/search(/batch)?$")


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the size limit outside this middleware still applies)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks)


class SearchFastPath:
    """POST /v1/collections/{name}/search[/batch] answered here; every other request passes through."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = SEARCH_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        batch = match.group(2) is not None
        scope.setdefault("state", {})["route"] = "/v1/collections/{name}/search" + ("/batch" if batch else "")
        response = await self._answer(scope, receive, match.group(1), batch)
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, name: str, batch: bool) -> Response:
        try:
            body = await read_body(receive)
            model = (BatchSearchRequest if batch else SearchRequest).model_validate_json(body)
            return await answer_search(self.state, scope, name, model)
        except ValidationError as exc:
            return validation_response(exc.errors())
        except DotcosError as exc:
            return dotcos_response(exc)
        except HTTPException as exc:
            return http_response(exc)
