"""Coalescing concurrent searches into one FAISS call.

One query at a time leaves most of the machine idle: a flat search is memory bound per
query but compute bound per batch, and HNSW parallelizes a batch across queries. Requests
that can share a call (same version, metric, knob and exactness; no filters) join a lane.
A lane runs at most `in_flight` calls at once; whatever arrives while they run forms the
next call (up to `max_batch` query rows). With the default window of 0 this adds no
latency at low load (a lone request is dispatched at once) and batches naturally under
load; a positive window makes a lone request wait up to that long for company.

A cheap lane (an `inline` run: the caller judged its searches small) runs on the event loop
itself instead: the executor hop (a thread wake-up, the future chained back, the loop woken
through its self-pipe) costs as much CPU as a small HNSW search. Its call is scheduled with
call_soon, so every request that arrived in the same loop iteration shares it; while it runs,
new requests wait in the sockets and form the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from index_builder.retrieval.scoring import Prepared
from service.core.query import Answer, Query

BatchFn = Callable[[Query], Answer]


@dataclass
class _Item:
    query: Query
    future: asyncio.Future[Answer]
    cost: float

    @property
    def rows(self) -> int:
        return len(self.query.queries)


@dataclass
class _Lane:
    fn: BatchFn
    inline: bool
    pending: list[_Item] = field(default_factory=list)
    running: int = 0
    timer: asyncio.Handle | None = None

    def pending_rows(self) -> int:
        return sum(item.rows for item in self.pending)


class Coalescer:
    """Groups concurrent queries by key and runs each group as one batched call in an executor."""

    def __init__(
        self, executor: Executor, max_batch: int, window_s: float, in_flight: int, inline_max_cost: float = 0.0
    ) -> None:
        self.executor = executor
        self.max_batch = max_batch
        self.window_s = window_s
        self.in_flight = in_flight
        self.inline_max_cost = inline_max_cost
        self._lanes: dict[Hashable, _Lane] = {}

    async def run(self, key: Hashable, query: Query, fn: BatchFn, cost: float | None = None) -> Answer:
        """fn's answer to this query, computed in one call with the others of its lane; on the
        event loop when its estimated `cost` is at most inline_max_cost."""
        loop = asyncio.get_running_loop()
        inline = cost is not None and cost <= self.inline_max_cost
        lane_key = (key, inline)
        lane = self._lanes.setdefault(lane_key, _Lane(fn, inline))
        item = _Item(query, loop.create_future(), cost or 0.0)
        lane.pending.append(item)
        if lane.inline:
            if lane.timer is None:
                lane.timer = loop.call_soon(self._run_inline, lane_key, lane)
        elif lane.running < self.in_flight:
            if self.window_s > 0 and lane.pending_rows() < self.max_batch:
                if lane.timer is None:
                    lane.timer = loop.call_later(self.window_s, self._dispatch, lane_key, lane)
            else:
                self._dispatch(lane_key, lane)
        return await item.future

    def _take(self, lane: _Lane) -> tuple[list[_Item], Query | None]:
        """The next call's items (cancelled ones dropped) and its query."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        items: list[_Item] = []
        rows, cost = 0, 0.0
        while lane.pending and (not items or self._fits(lane, rows, cost, lane.pending[0])):
            item = lane.pending.pop(0)
            if not item.future.done():
                items.append(item)
                rows, cost = rows + item.rows, cost + item.cost
        if not items:
            return items, None
        first = items[0].query
        if len(items) == 1:
            return items, first
        k = max(item.query.options.k for item in items)
        return items, first.batched(Prepared.concat([item.query.queries for item in items]), k)

    def _fits(self, lane: _Lane, rows: int, cost: float, item: _Item) -> bool:
        """Whether the item joins a call of `rows` rows so far (an inline call also stays within
        inline_max_cost, so the loop is never held long)."""
        return rows + item.rows <= self.max_batch and (not lane.inline or cost + item.cost <= self.inline_max_cost)

    def _dispatch(self, key: Hashable, lane: _Lane) -> None:
        items, batch = self._take(lane)
        if batch is None:
            self._settle(key, lane)
            return
        lane.running += 1
        call = asyncio.get_running_loop().run_in_executor(self.executor, lane.fn, batch)
        call.add_done_callback(lambda done: self._finished(key, lane, items, done))

    def _run_inline(self, key: Hashable, lane: _Lane) -> None:
        """Every call the lane's pending requests make, run here on the event loop."""
        while True:
            items, batch = self._take(lane)
            if batch is None:
                break
            try:
                answer = lane.fn(batch)
            except Exception as exc:  # noqa: BLE001 - handed to every request of the call
                self._deliver(items, None, exc)
            else:
                self._deliver(items, answer, None)
        self._settle(key, lane)

    def _finished(self, key: Hashable, lane: _Lane, items: list[_Item], done: asyncio.Future[Answer]) -> None:
        lane.running -= 1
        error = done.exception()
        self._deliver(items, None if error is not None else done.result(), error)
        self._settle(key, lane)

    @staticmethod
    def _deliver(items: list[_Item], answer: Answer | None, error: BaseException | None) -> None:
        """Each item's share of one call's answer, or the call's error."""
        answers = [] if answer is None else answer.split([i.rows for i in items], [i.query.options.k for i in items])
        for at, item in enumerate(items):
            if item.future.done():
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(answers[at])

    def _settle(self, key: Hashable, lane: _Lane) -> None:
        if lane.pending and lane.running < self.in_flight:
            self._dispatch(key, lane)
        elif not lane.pending and lane.running == 0 and self._lanes.get(key) is lane:
            del self._lanes[key]
