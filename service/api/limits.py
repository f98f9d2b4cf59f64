"""Gates on request bodies before they are read: their size, and their Content-Type."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.binary import BINARY
from service.api.errors import dotcos_reply, error_response
from service.core.errors import TooLarge

JSON = "application/json"
BINARY_PATHS = ("/search", "/search/batch")


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


class ContentTypes:
    """415 for a POST body whose Content-Type is not JSON (or, on the searches, raw float32), or
    that has none: a form-encoded or text body would otherwise be read as JSON and fail obscurely."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = dict(scope["headers"])
            sized = headers.get(b"content-length", b"0") not in (b"", b"0") or b"transfer-encoding" in headers
            media = headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
            accepted = (JSON, BINARY) if scope["path"].endswith(BINARY_PATHS) else (JSON,)
            if sized and media not in accepted:
                got = f"got {media!r}" if media else "it has none"
                message = f"Content-Type: expected {' or '.join(accepted)}, {got}"
                await error_response(415, "unsupported_media_type", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)
