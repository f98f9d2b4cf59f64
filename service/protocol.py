"""uvicorn's httptools protocol, with a response's writes to its connection joined into one.

uvicorn writes a response's head and its body with two socket writes. On loopback, and on most
virtual machines, each write wakes the reading client on its own, so a small answer costs two
wake-ups, two segments and the system calls of both, on the server and on the client. Here the
writes a connection gets within one event-loop iteration (a handler sends its head and body in
one go) are collected and leave in one write at the end of the iteration; nothing else about
the protocol changes (flow control, keep-alive and closing go to the real transport, the
buffer first).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


class OneWriteProtocol(HttpToolsProtocol):
    """HttpToolsProtocol writing through JoinedWrites (passed to uvicorn as its `http` class)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        joined: Any = JoinedWrites(transport, self.loop)
        super().connection_made(joined)
