"""Where searches run: off the event loop, in one executor, unfiltered ones coalesced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from service.core.batching import Coalescer
from service.core.collection import LoadedVersion
from service.core.search import Limits, SearchOptions, SearchResult, run_search, to_hits, validate

T = TypeVar("T")


@dataclass(frozen=True)
class ExecutionSettings:
    """How FAISS work is scheduled (from service settings)."""

    threads: int = 2
    max_batch: int = 256
    window_s: float = 0.0
    in_flight: int = 1


class Searcher:
    """Owns the executor FAISS work runs in and the coalescer that batches it."""

    def __init__(self, limits: Limits, execution: ExecutionSettings) -> None:
        self.limits = limits
        self.executor = ThreadPoolExecutor(max_workers=execution.threads, thread_name_prefix="dotcos-search")
        self.coalescer = Coalescer(self.executor, execution.max_batch, execution.window_s, execution.in_flight)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking work (FAISS, large numpy) in the search executor."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def search(self, version: LoadedVersion, vectors: np.ndarray, options: SearchOptions,
                     field_name: str) -> SearchResult:
        """Validate on the loop, search in the executor, shape hits; errors surface as DotcosError."""
        served = validate(version, vectors, options, self.limits, field_name)
        if options.exclude or options.include is not None:
            scores, rows = await self.call(run_search, version, served, vectors, options, self.limits)
        else:
            key = (id(version), served.space.name, options.exact, options.nprobe, options.ef_search)

            def batch(stacked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
                return run_search(version, served, stacked, replace(options, k=k), self.limits)

            scores, rows = await self.coalescer.run(key, vectors, options.k, batch)
        hits = to_hits(version, scores, rows)
        return SearchResult(version.collection, version.version, served.space.name, hits)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
