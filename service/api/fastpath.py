"""The two hot search routes answered straight from ASGI, skipping FastAPI's per-request machinery.

FastAPI's middleware stack, routing, dependency solving and body handling cost about as much
event-loop time as the search itself on small collections. This layer sits in front of all of
it (see DotcosApp), parses plain bodies with orjson (anything else with the same pydantic models
as the routes) and calls the same handler as the routes (`answer_search`), with the same error
bodies; the FastAPI routes stay the documented interface (OpenAPI) and serve when it is off.
"""

from __future__ import annotations

import re

import numpy as np
import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from index_builder.contract.errors import DotcosError
from service.api.errors import dotcos_response, http_response, unexpected_response, validation_response
from service.api.routes import answer_search, as_float32, query_field, search_input
from service.api.schemas import BatchSearchRequest, SearchRequest
from service.api.state import AppState
from service.core.search import SearchOptions

SEARCH_PATH = re.compile(r"^/v1/collections/([^/]+)/search(/batch)?$")


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the size limit outside this middleware still applies)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks)


DEFAULT_K = SearchRequest.model_fields["k"].default
PLAIN_KEYS = {False: frozenset({"vector", "k", "metric"}), True: frozenset({"vectors", "k", "metric"})}


def plain_search(body: bytes, batch: bool) -> tuple[np.ndarray, SearchOptions] | None:
    """The query matrix and options of the common body (numbers, `k`, `metric`; nothing else), or
    None for anything else, which then goes through the pydantic model.

    Parsing a 384-float body into a pydantic model and then a list into an array was a quarter of
    the event loop's time per search; orjson plus one numpy conversion is a fraction of that.
    Whatever this declines is validated exactly as before, so errors and lax conversions do not change.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not doc.keys() <= PLAIN_KEYS[batch]:
        return None
    k, metric = doc.get("k", DEFAULT_K), doc.get("metric")
    if type(k) is not int or k < 1 or not (metric is None or type(metric) is str):
        return None
    field = query_field(batch)
    try:
        values = np.array(doc.get(field))
    except ValueError:
        return None
    if values.dtype.kind not in "fi" or values.ndim != (2 if batch else 1) or 0 in values.shape:
        return None
    matrix = as_float32(np.asarray(values if batch else values[None, :], dtype=np.float64), field)
    return matrix, SearchOptions(k=k, metric=metric)


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
            parsed = plain_search(body, batch)
            if parsed is None:
                vectors, options = search_input((BatchSearchRequest if batch else SearchRequest)
                                                .model_validate_json(body))
            else:
                vectors, options = parsed
            return await answer_search(self.state, scope, name, vectors, options, batch)
        except ValidationError as exc:
            return validation_response(exc.errors())
        except DotcosError as exc:
            return dotcos_response(exc)
        except HTTPException as exc:
            return http_response(exc)
        except Exception:
            return unexpected_response("POST", scope["path"])
