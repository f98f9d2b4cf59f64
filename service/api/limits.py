"""Refuse request bodies over the configured size before they are read into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import dotcos_reply
from service.core.errors import TooLarge


class BodySizeLimit:
    """413 for a Content-Length over the limit, or as soon as a streamed body crosses it (the
    reader of the body gets TooLarge, which every door maps to the same 413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self, size: int) -> TooLarge:
        return TooLarge(f"body: {size} bytes exceed the limit of {self.max_bytes} (DOTCOS_MAX_BODY_BYTES)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = dotcos_reply(self._error(int(declared))).response()
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._error(seen)
            return message

        await self.app(scope, counted, send)
