"""One write per response (the writes a connection gets in one loop iteration leave together),
and a small request started once its body is in, however the client split it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.protocol import JoinedWrites, OneWriteProtocol


class Recorder:
    """A transport recording each write it is given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def test_writes_of_one_iteration_reach_the_socket_once_in_order() -> None:
    async def scenario() -> None:
        real = Recorder()
        joined = JoinedWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(memoryview(b'{"a": 1}'))
        assert real.writes == []
        await asyncio.sleep(0)
        assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"a": 1}']
        joined.write(b"next")
        await asyncio.sleep(0)
        assert real.writes[-1] == b"next" and len(real.writes) == 2
        assert joined.get_extra_info("peername") == "info:peername"

    asyncio.run(scenario())


def test_close_sends_what_is_pending_first_and_a_closing_socket_gets_nothing() -> None:
    async def scenario() -> None:
        real = Recorder()
        joined = JoinedWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        joined.write(b"last words")
        joined.close()
        assert real.writes == [b"last words"] and real.closed
        joined.write(b"too late")
        await asyncio.sleep(0)
        assert real.writes == [b"last words"]

    asyncio.run(scenario())


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app answering a request with its body, read in one receive()."""
    message = await receive()
    assert not message["more_body"], "the app was started before the body was in"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(message["body"]))]}
    )
    await send({"type": "http.response.body", "body": message["body"]})


class Connection(Recorder):
    """A transport as uvicorn's protocol asks of one (addresses, flow control)."""

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 8000) if name in ("peername", "sockname") else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def protocol_for(app: Any) -> tuple[OneWriteProtocol, Connection]:
    """The protocol of a fresh connection to `app`, made on the running loop."""
    config = Config(app=app, log_level="warning")
    config.load()
    protocol = OneWriteProtocol(config=config, server_state=ServerState(), app_state={})
    connection = Connection()
    protocol.connection_made(connection)  # type: ignore[arg-type]
    return protocol, connection


def head(length: int, extra: bytes = b"") -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n" % (length, extra)


def feed(*chunks: bytes) -> tuple[list[int], Recorder]:
    """The protocol fed the chunks one loop turn apart: how many request tasks run after each, and
    the transport it wrote to."""

    async def scenario() -> tuple[list[int], Recorder]:
        protocol, real = protocol_for(echo)
        started = []
        for chunk in chunks:
            protocol.data_received(chunk)
            started.append(len(protocol.tasks) + protocol.server_state.total_requests)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        return started, real

    return asyncio.run(scenario())


def test_a_small_request_split_in_two_starts_once_its_body_is_in() -> None:
    body = b"x" * 1536
    started, real = feed(head(len(body)), body[:700], body[700:])
    assert started == [0, 0, 1]
    assert b"".join(real.writes).endswith(b"\r\n\r\n" + body)


def test_a_request_in_one_piece_starts_at_once() -> None:
    started, real = feed(head(3) + b"abc")
    assert started == [1] and b"".join(real.writes).endswith(b"abc")


@pytest.mark.parametrize(
    ("extra", "length"),
    [(b"Expect: 100-continue\r\n", 10), (b"", 65537)],
    ids=["expects-100-continue", "larger-than-the-high-water-mark"],
)
def test_requests_that_need_the_app_to_read_start_at_the_head(extra: bytes, length: int) -> None:
    """A client waiting for 100 Continue sends no body until the app reads, and a large body
    pauses reading until the app drains it: both must start at once, as uvicorn does."""

    async def early(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> int:
        protocol, _ = protocol_for(early)
        protocol.data_received(head(length, extra))
        await asyncio.sleep(0.01)
        return protocol.server_state.total_requests

    assert asyncio.run(scenario()) == 1


def test_pipelined_requests_split_anywhere_are_all_answered_in_order() -> None:
    first, second = b"a" * 100, b"b" * 200
    stream = head(len(first)) + first + head(len(second)) + second
    for cut in (10, len(head(100)) + 50, len(head(100)) + 100 + 5, len(stream) - 1):
        _, real = feed(stream[:cut], stream[cut:])
        answer = b"".join(real.writes)
        assert answer.count(b"HTTP/1.1 200") == 2 and answer.index(first) < answer.index(second), cut
