"""The background loop every service thread runs on: steps repeat, failures are survived, stop stops."""

from __future__ import annotations

import logging
import threading

import pytest

from service.core.periodic import Periodic

WAIT_S = 30


def test_steps_repeat_after_a_failing_one_and_stop_ends_them(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    third = threading.Event()

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("first round fails")
        if len(calls) == 3:
            third.set()

    loop = Periodic("test-loop", 0.001, step, "the test step failed")
    with caplog.at_level(logging.ERROR, logger="service.core.periodic"):
        loop.start()
        assert third.wait(WAIT_S)
        loop.stop()
    assert [r.getMessage() for r in caplog.records] == ["the test step failed"]
    assert loop._thread is not None and not loop._thread.is_alive()


def test_first_runs_before_any_step_and_an_interval_of_zero_never_steps() -> None:
    order: list[str] = []
    loop = Periodic("test-once", 0, lambda: order.append("step"), "unused")
    loop.start(lambda: order.append("first"))
    assert loop._thread is not None
    loop._thread.join(WAIT_S)
    assert not loop._thread.is_alive()
    assert order == ["first"]


def test_a_step_sets_the_next_wait() -> None:
    seen: list[float] = []
    twice = threading.Event()

    def step() -> None:
        seen.append(loop.interval)
        loop.interval = 0.002
        if len(seen) == 2:
            twice.set()

    loop = Periodic("test-pause", 0.001, step, "unused")
    loop.start()
    assert twice.wait(WAIT_S)
    loop.stop()
    assert seen[:2] == [0.001, 0.002]
