"""The coalescer alone, with an executor the test drives: batching, per-request k, cancellation, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np
import pytest

from index_builder.retrieval.scoring import Prepared
from service.core.batching import Coalescer
from service.core.query import Answer, Query, SearchOptions
from service.settings import ServiceSettings

LIMITS = ServiceSettings().limits


class ManualExecutor(Executor):
    """Holds every submitted call until the test runs it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.calls.append((fn, args, future))
        return future

    async def run_next(self) -> None:
        fn, args, future = self.calls.pop(0)
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting side, as a real executor does
            future.set_exception(exc)
        for _ in range(3):
            await asyncio.sleep(0)


def query(first: int, rows: int, k: int) -> Query:
    """Queries whose single coordinate is their number, so answers can be traced back."""
    values = np.arange(first, first + rows, dtype=np.float32)[:, None]
    return Query("dot", Prepared(values, values), SearchOptions(k=k), {}, LIMITS)


def echo(batch: Query) -> Answer:
    """Each query's answer: k columns holding its own number (scores) and the column (rows)."""
    k = batch.options.k
    numbers = batch.queries.prepared[:, :1]
    scores = np.repeat(numbers, k, axis=1)
    rows = np.tile(np.arange(k, dtype=np.int64), (len(numbers), 1))
    return Answer(scores, rows, np.full(rows.shape, None, dtype=object))


def started(coalescer: Coalescer, q: Query, fn: Callable[[Query], Answer] = echo) -> asyncio.Task[Answer]:
    return asyncio.ensure_future(coalescer.run("lane", q, fn))


def test_a_lone_query_runs_at_once_and_later_ones_share_the_next_call() -> None:
    async def scenario() -> None:
        executor = ManualExecutor()
        coalescer = Coalescer(executor, max_batch=64, window_s=0, in_flight=1)
        first = started(coalescer, query(0, 1, 3))
        await asyncio.sleep(0)
        assert len(executor.calls) == 1
        later = [started(coalescer, query(10, 2, 2)), started(coalescer, query(20, 1, 5))]
        await asyncio.sleep(0)
        assert len(executor.calls) == 1, "nothing more runs while the lane's call is in flight"
        await executor.run_next()
        assert first.done() and first.result().scores.shape == (1, 3)
        assert len(executor.calls) == 1
        batch = executor.calls[0][1][0]
        assert len(batch.queries) == 3 and batch.options.k == 5
        await executor.run_next()
        two, one = (task.result() for task in later)
        assert two.scores.shape == (2, 2) and two.scores[:, 0].tolist() == [10, 11]
        assert one.scores.shape == (1, 5) and one.scores[0, 0] == 20

    asyncio.run(scenario())


def test_a_batch_never_exceeds_max_batch_rows() -> None:
    async def scenario() -> None:
        executor = ManualExecutor()
        coalescer = Coalescer(executor, max_batch=4, window_s=0, in_flight=1)
        blocker = started(coalescer, query(0, 1, 1))
        await asyncio.sleep(0)
        waiting = [started(coalescer, query(10 * i, 3, 1)) for i in range(1, 4)]
        await asyncio.sleep(0)
        sizes = []
        while executor.calls:
            sizes.append(len(executor.calls[0][1][0].queries))
            await executor.run_next()
        assert sizes == [1, 3, 3, 3]
        assert blocker.done() and all(t.result().scores[0, 0] == 10 * (i + 1) for i, t in enumerate(waiting))

    asyncio.run(scenario())


def test_a_cancelled_query_is_skipped_and_the_others_answered() -> None:
    async def scenario() -> None:
        executor = ManualExecutor()
        coalescer = Coalescer(executor, max_batch=64, window_s=0, in_flight=1)
        started(coalescer, query(0, 1, 1))
        await asyncio.sleep(0)
        gone, kept = started(coalescer, query(10, 1, 1)), started(coalescer, query(20, 1, 1))
        await asyncio.sleep(0)
        gone.cancel()
        await executor.run_next()
        assert len(executor.calls[0][1][0].queries) == 1
        await executor.run_next()
        assert gone.cancelled() and kept.result().scores[0, 0] == 20

    asyncio.run(scenario())


def test_an_error_reaches_every_query_of_the_batch_and_the_lane_goes_on() -> None:
    def broken(batch: Query) -> Answer:
        raise RuntimeError("faiss said no")

    async def scenario() -> None:
        executor = ManualExecutor()
        coalescer = Coalescer(executor, max_batch=64, window_s=0, in_flight=1)
        failing = [started(coalescer, query(0, 1, 1), broken)]
        await asyncio.sleep(0)
        failing += [started(coalescer, query(10, 1, 1), broken), started(coalescer, query(20, 1, 1), broken)]
        await asyncio.sleep(0)
        await executor.run_next()
        await executor.run_next()
        for task in failing:
            with pytest.raises(RuntimeError, match="faiss said no"):
                task.result()
        after = started(coalescer, query(30, 1, 2))
        await asyncio.sleep(0)
        await executor.run_next()
        assert after.result().scores.shape == (1, 2)

    asyncio.run(scenario())


def test_a_window_holds_a_lone_query_for_company() -> None:
    async def scenario() -> None:
        executor = ManualExecutor()
        coalescer = Coalescer(executor, max_batch=64, window_s=0.05, in_flight=1)
        tasks = [started(coalescer, query(0, 1, 1))]
        await asyncio.sleep(0)
        assert executor.calls == []
        tasks.append(started(coalescer, query(10, 1, 1)))
        while not executor.calls:
            await asyncio.sleep(0.01)
        assert len(executor.calls[0][1][0].queries) == 2
        await executor.run_next()
        assert [t.result().scores[0, 0] for t in tasks] == [0, 10]

    asyncio.run(scenario())
