"""The query routes answered straight from ASGI, in front of FastAPI's per-request machinery.

FastAPI's middleware stack, routing, dependency solving and body handling cost about as much
event-loop time as the search itself on small collections. This layer sits before all of it
(see DotcosApp) and calls the same handlers as the FastAPI routes, which stay the documented
interface; every other request passes through to FastAPI.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from index_builder.artifact.errors import DotcosError
from service.api.errors import dotcos_reply
from service.api.handlers import ROUTES, Call, answer
from service.api.state import AppState

QUERY_PATH = re.compile(rf"^/v1/collections/([^/]+)/({'|'.join(map(re.escape, ROUTES))})$")


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the size limit outside this layer still applies)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks)


class QueryFront:
    """POST /v1/collections/{name}/<a query route of service.api.handlers.ROUTES> answered here."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = QUERY_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route = ROUTES[match.group(2)]
        try:
            body = await read_body(receive)
        except DotcosError as exc:
            reply = dotcos_reply(exc)
        else:
            call = Call(match.group(1), body, Headers(scope=scope), scope["query_string"].decode("latin-1"))
            reply = await answer(route, self.state, call, scope["path"])
        scope.setdefault("state", {}).update(
            route=route.template, metric=reply.metric, collection=reply.collection, arm=reply.arm
        )
        await reply.response()(scope, receive, send)
