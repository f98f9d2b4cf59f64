"""Coalescing concurrent searches into one FAISS call.

One query at a time leaves most of the machine idle: a flat search is memory bound per
query but compute bound per batch, and HNSW parallelizes a batch across queries. Requests
that can share a call (same version, metric, knob and exactness; no filters) join a lane.
A lane runs at most `in_flight` calls at once; whatever arrives while they run forms the
next call (up to `max_batch` query rows). With the default window of 0 this adds no
latency at low load (a lone request is dispatched at once) and batches naturally under
load; a positive window makes a lone request wait up to that long for company.
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

    @property
    def rows(self) -> int:
        return len(self.query.queries)


@dataclass
class _Lane:
    fn: BatchFn
    pending: list[_Item] = field(default_factory=list)
    running: int = 0
    timer: asyncio.TimerHandle | None = None

    def pending_rows(self) -> int:
        return sum(item.rows for item in self.pending)


class Coalescer:
    """Groups concurrent queries by key and runs each group as one batched call in an executor."""

    def __init__(self, executor: Executor, max_batch: int, window_s: float, in_flight: int) -> None:
        self.executor = executor
        self.max_batch = max_batch
        self.window_s = window_s
        self.in_flight = in_flight
        self._lanes: dict[Hashable, _Lane] = {}

    async def run(self, key: Hashable, query: Query, fn: BatchFn) -> Answer:
        """fn's answer to this query, computed in one call with the others of its lane."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.setdefault(key, _Lane(fn))
        item = _Item(query, loop.create_future())
        lane.pending.append(item)
        if lane.running < self.in_flight:
            if self.window_s > 0 and lane.pending_rows() < self.max_batch:
                if lane.timer is None:
                    lane.timer = loop.call_later(self.window_s, self._dispatch, key, lane)
            else:
                self._dispatch(key, lane)
        return await item.future

    def _dispatch(self, key: Hashable, lane: _Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        items: list[_Item] = []
        rows = 0
        while lane.pending and (not items or rows + lane.pending[0].rows <= self.max_batch):
            item = lane.pending.pop(0)
            if not item.future.done():
                items.append(item)
                rows += item.rows
        if not items:
            self._settle(key, lane)
            return
        lane.running += 1
        first = items[0].query
        batch = (
            first
            if len(items) == 1
            else first.batched(
                Prepared.concat([item.query.queries for item in items]), max(item.query.options.k for item in items)
            )
        )
        call = asyncio.get_running_loop().run_in_executor(self.executor, lane.fn, batch)
        call.add_done_callback(lambda done: self._finished(key, lane, items, done))

    def _finished(self, key: Hashable, lane: _Lane, items: list[_Item], done: asyncio.Future[Answer]) -> None:
        lane.running -= 1
        error = done.exception()
        answers = (
            []
            if error is not None
            else done.result().split([item.rows for item in items], [item.query.options.k for item in items])
        )
        for at, item in enumerate(items):
            if item.future.done():
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(answers[at])
        self._settle(key, lane)

    def _settle(self, key: Hashable, lane: _Lane) -> None:
        if lane.pending and lane.running < self.in_flight:
            self._dispatch(key, lane)
        elif not lane.pending and lane.running == 0 and self._lanes.get(key) is lane:
            del self._lanes[key]
