"""One write per response: the writes a connection gets in one loop iteration leave together."""

from __future__ import annotations

import asyncio
from typing import Any

from service.protocol import JoinedWrites


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
