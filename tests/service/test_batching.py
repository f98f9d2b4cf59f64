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


def counted(calls: list[int]) -> Callable[[Query], Answer]:
    """echo, recording the rows of every call it answers."""

    def fn(batch: Query) -> Answer:
        calls.append(len(batch.queries))
        return echo(batch)

    return fn


def test_cheap_queries_of_one_loop_iteration_share_one_call_on_the_loop() -> None:
    """Within inline_max_cost the call runs on the event loop: the executor is never used, every
    query that arrived before the loop came round shares the call, and each gets its own k."""

    async def scenario() -> None:
        executor, calls = ManualExecutor(), []
        coalescer = Coalescer(executor, max_batch=64, window_s=0, in_flight=1, inline_max_cost=100)
        tasks = [
            asyncio.ensure_future(coalescer.run("lane", query(10 * i, 1, i + 1), counted(calls), cost=10))
            for i in range(3)
        ]
        results = await asyncio.gather(*tasks)
        assert executor.calls == [] and calls == [3]
        assert [r.scores.shape for r in results] == [(1, 1), (1, 2), (1, 3)]
        assert [r.scores[0, 0] for r in results] == [0, 10, 20]

    asyncio.run(scenario())


def test_an_inline_call_stays_within_the_cost_and_dearer_queries_use_the_executor() -> None:
    async def scenario() -> None:
        executor, calls = ManualExecutor(), []
        coalescer = Coalescer(executor, max_batch=64, window_s=0, in_flight=1, inline_max_cost=25)
        cheap = [
            asyncio.ensure_future(coalescer.run("lane", query(i, 1, 1), counted(calls), cost=10)) for i in range(5)
        ]
        dear = asyncio.ensure_future(coalescer.run("lane", query(99, 1, 1), counted(calls), cost=26))
        await asyncio.gather(*cheap)
        assert calls == [2, 2, 1], "no inline call holds more than inline_max_cost of work"
        await asyncio.sleep(0)
        assert len(executor.calls) == 1 and not dear.done()
        await executor.run_next()
        assert dear.result().scores[0, 0] == 99

    asyncio.run(scenario())


def test_inline_errors_and_cancellations_reach_only_their_own_call() -> None:
    def broken(batch: Query) -> Answer:
        raise RuntimeError("faiss said no")

    async def scenario() -> None:
        coalescer = Coalescer(ManualExecutor(), max_batch=64, window_s=0, in_flight=1, inline_max_cost=100)
        failing = asyncio.ensure_future(coalescer.run("a", query(0, 1, 1), broken, cost=1))
        gone = asyncio.ensure_future(coalescer.run("b", query(1, 1, 1), echo, cost=1))
        kept = asyncio.ensure_future(coalescer.run("b", query(2, 1, 1), echo, cost=1))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(failing, gone, kept, return_exceptions=True)
        with pytest.raises(RuntimeError, match="faiss said no"):
            failing.result()
        assert gone.cancelled() and kept.result().scores[0, 0] == 2
        assert coalescer._lanes == {}, "finished lanes are dropped"

    asyncio.run(scenario())
