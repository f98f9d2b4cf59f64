"""Where searches run: off the event loop, in one executor, unfiltered ones coalesced."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

import numpy as np

from service.core import gather
from service.core.batching import Coalescer
from service.core.config import ExecutionSettings, Limits
from service.core.errors import Unavailable
from service.core.gather import ShardedVersion
from service.core.items import ScoreQuery, SimilarQuery, score, similar
from service.core.loader import Served
from service.core.search import Hit, SearchOptions, SearchResult, run_search, to_hits, validate

T = TypeVar("T")


class Searcher:
    """Owns the executor FAISS work runs in and the coalescer that batches it."""

    def __init__(self, limits: Limits, execution: ExecutionSettings) -> None:
        self.limits = limits
        self.execution = execution
        self.executor = ThreadPoolExecutor(max_workers=execution.threads, thread_name_prefix="dotcos-search")
        self.coalescer = Coalescer(self.executor, execution.max_batch, execution.window_s, execution.in_flight)
        self.pending = 0

    def saturated(self) -> bool:
        """True when no more searches may wait (read on the event loop only)."""
        return self.pending >= self.execution.max_pending

    def overload_message(self) -> str:
        return (f"overloaded: {self.pending} searches already waiting "
                f"(DOTCOS_MAX_PENDING={self.execution.max_pending}); retry shortly")

    async def _admitted(self, start: Callable[[], Awaitable[T]], deadline_s: float | None) -> T:
        """Bounded waiting: refuse at once beyond max_pending, give up at the deadline.

        `pending` is only touched on the event loop, so it needs no lock. A request that
        times out while queued is cancelled and never runs (the coalescer skips it).
        """
        if self.saturated():
            raise Unavailable(self.overload_message())
        budget = deadline_s if deadline_s is not None else self.execution.default_deadline_s
        self.pending += 1
        try:
            work = start()
            return await (work if budget is None else asyncio.wait_for(work, budget))
        except TimeoutError:
            raise Unavailable(f"deadline of {(budget or 0) * 1000:g} ms passed before the answer was ready; "
                              "retry, or allow more time with X-Deadline-Ms") from None
        finally:
            self.pending -= 1

    async def call(self, fn: Callable[..., T], *args: object, deadline_s: float | None = None) -> T:
        """Run blocking work (FAISS, large numpy) in the search executor, admitted like a search."""
        loop = asyncio.get_running_loop()
        return await self._admitted(lambda: loop.run_in_executor(self.executor, fn, *args), deadline_s)

    async def search(self, version: Served, vectors: np.ndarray, options: SearchOptions,
                     field_name: str, deadline_s: float | None = None) -> SearchResult:
        """Validate on the loop, search in the executor, shape hits; errors surface as DotcosError."""
        if isinstance(version, ShardedVersion):
            return await self._admitted(lambda: gather.search(version, vectors, options, self.limits, field_name),
                                        deadline_s)
        served = validate(version, vectors, options, self.limits, field_name)
        if options.exclude or options.include is not None:
            scores, rows = await self.call(run_search, version, served, vectors, options, self.limits,
                                           deadline_s=deadline_s)
        else:
            key = (id(version), served.space.name, options.exact, options.nprobe, options.ef_search)

            def batch(stacked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
                return run_search(version, served, stacked, replace(options, k=k), self.limits)

            scores, rows = await self._admitted(lambda: self.coalescer.run(key, vectors, options.k, batch),
                                                deadline_s)
        hits = to_hits(version, scores, rows)
        return SearchResult(version.collection, version.version, served.space.name, hits)

    async def similar(self, version: Served, query: SimilarQuery, deadline_s: float | None = None) -> SearchResult:
        """Neighbours of a stored document or a document vector (see items.similar)."""
        if isinstance(version, ShardedVersion):
            return await self._admitted(lambda: gather.similar(version, query, self.limits), deadline_s)
        return await self.call(similar, version, query, self.limits, deadline_s=deadline_s)

    async def score(self, version: Served, query: ScoreQuery,
                    deadline_s: float | None = None) -> tuple[str, list[list[Hit]]]:
        """Exact scores of given candidates (see items.score)."""
        if isinstance(version, ShardedVersion):
            return await self._admitted(lambda: gather.score(version, query, self.limits), deadline_s)
        return await self.call(score, version, query, self.limits, deadline_s=deadline_s)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
