"""uvicorn's httptools protocol, with a response's writes joined into one and a small request
started once its body is in.

uvicorn writes a response's head and its body with two socket writes. On loopback, and on most
virtual machines, each write wakes the reading client on its own, so a small answer costs two
wake-ups, two segments and the system calls of both, on the server and on the client. Here the
writes a connection gets within one event-loop iteration (a handler sends its head and body in
one go) are collected and leave in one write at the end of the iteration; nothing else about
the protocol changes (flow control, keep-alive and closing go to the real transport, the
buffer first).

Python's http.client (so requests, and httpx's sync path) sends a request's head and body in two
writes, which often arrive in two reads. uvicorn starts the application at the end of the head,
so the request's task runs, finds no body, parks and is woken again when the body arrives. A
request whose body is small (at most uvicorn's high-water mark, so reading is never paused for
it) and that does not ask for `100-continue` is started at the end of its body instead: one task
step, whichever way the client split it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class JoinedWrites:
    """A transport whose writes within one loop iteration reach the socket as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        """Hand what was written so far to the socket (dropped once the connection is closing)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def small_body_to_come(cycle: RequestResponseCycle) -> bool:
    """Whether the request's body is still to come and small enough to wait for before starting."""
    if not cycle.more_body or cycle.waiting_for_100_continue:
        return False
    length = next((value for name, value in cycle.scope["headers"] if name == b"content-length"), None)
    return length is not None and length.isdigit() and 0 < int(length) <= HIGH_WATER_LIMIT


class OneWriteProtocol(HttpToolsProtocol):
    """HttpToolsProtocol writing through JoinedWrites and starting a small request at the end of
    its body (passed to uvicorn as its `http` class)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._waiting: tuple[RequestResponseCycle, Any] | None = None
        joined: Any = JoinedWrites(transport, self.loop)
        super().connection_made(joined)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if small_body_to_come(cycle):
            self._waiting = (cycle, app)
            return
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            super()._start_asgi_task(*waiting)
