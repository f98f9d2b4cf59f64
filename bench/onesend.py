"""An http.client connection that sends a request's head and body in one segment, with Nagle off.

http.client (and so requests and httpx's sync path) sends the head and the body of a request in
two writes, and the server then reads the request in two: one more wake-up, read and loop turn
per request. Sequential binary searches of the 50k SQ8 peers collection cost dotcos 1,400-1,425
us of CPU each with two writes and 1,200-1,240 with one in one A/B, 950-1,015 and 895-915 in a
second (6-16 %). curl,
Go's net/http and Java's clients send a small request in one write, as redis-py sends a command;
the bench's HTTP clients do too, so HTTP servers are not charged for one client library's habit.
Standard library only: bench/vdbbench_client.py runs it inside VectorDBBench's virtualenv.
"""

from __future__ import annotations

import http.client
import socket


class OneSendConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send_output(self, message_body: object = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes):
            super()._send_output(message_body, encode_chunked)  # type: ignore[arg-type]
            return
        self._buffer.extend((b"", b""))  # type: ignore[attr-defined]
        head = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
        del self._buffer[:]  # type: ignore[attr-defined]
        self.send(head + message_body)
