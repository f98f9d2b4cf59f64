"""The core's entry for every query route: admission and deadlines, then the version's parts.

A request is checked once (`Version.query`), handed to its version's parts (local parts run in
the executor, coalesced; Ray parts remotely), and comes back as one merged `Answer` that
becomes hits here, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from index_builder.artifact.errors import InputError
from service.core import readback
from service.core.batching import Coalescer
from service.core.changes import check_ids
from service.core.config import ExecutionSettings, Limits
from service.core.errors import TooLarge, Unavailable
from service.core.loader import faiss_threads
from service.core.monitor import RecallMonitor
from service.core.overlay import Snapshot
from service.core.part import Doc
from service.core.query import Answer, Hit, SearchOptions, check_batch, check_finite, check_options, to_hits
from service.core.querylog import QueryLog
from service.core.ranking import RecommendQuery, best_score, example_vectors, shaped
from service.core.rerank import AVERAGE_VECTOR, average_example
from service.core.shadow import ShadowMonitor
from service.core.version import Version

T = TypeVar("T")


@dataclass(frozen=True)
class SearchResult:
    collection: str
    version: str
    metric: str
    hits: list[list[Hit]]


async def answered(
    version: Version, metric: str, answer: Answer, options: SearchOptions, changes: Snapshot | None
) -> SearchResult:
    """The answer the request asked for (service.core.ranking.shaped) as hits, each with its
    stored vector under the same changes when with_vectors asks."""
    hits = to_hits(await shaped(version, answer, options, changes))
    if options.with_vectors:
        ids = list(dict.fromkeys(hit.id for line in hits for hit in line))
        stored = (await version.vectors_of(ids, "with_vectors", changes)).tolist() if ids else []
        vectors = dict(zip(ids, stored, strict=True))
        hits = [[hit._replace(vector=vectors[hit.id]) for hit in line] for line in hits]
    return SearchResult(version.collection, version.version, metric, hits)


@dataclass(frozen=True)
class SimilarQuery:
    """Neighbours of a stored document (`doc_id`), of several (`doc_ids`: around their average),
    or of a document `vector`."""

    doc_id: str | None
    vector: np.ndarray | None
    options: SearchOptions
    doc_ids: list[str] | None = None


@dataclass(frozen=True)
class ScoreQuery:
    """One candidate list per query vector; `metric` None means the collection's first; candidates
    the `filter` leaves out are dropped."""

    vectors: np.ndarray
    ids: list[list[str]]
    metric: str | None
    filter: dict[str, Any] | None = None


class Searcher:
    """Owns the executor FAISS work runs in and the coalescer that batches it, and admits requests."""

    def __init__(
        self,
        limits: Limits,
        execution: ExecutionSettings,
        query_log: QueryLog | None = None,
        monitor: RecallMonitor | None = None,
        shadows: ShadowMonitor | None = None,
    ) -> None:
        self.limits = limits
        self.execution = execution
        self.query_log = query_log
        self.monitor = monitor
        self.shadows = shadows
        self.executor = ThreadPoolExecutor(
            max_workers=execution.threads,
            thread_name_prefix="dotcos-search",
            initializer=faiss_threads,
            initargs=(execution.faiss_threads,),
        )
        self.coalescer = Coalescer(
            self.executor, execution.max_batch, execution.window_s, execution.in_flight, execution.inline_max_cost
        )
        self.pending = 0

    def saturated(self) -> bool:
        """True when no more searches may wait (read on the event loop only)."""
        return self.pending >= self.execution.max_pending

    def overload_message(self) -> str:
        return (
            f"overloaded: {self.pending} searches already waiting "
            f"(DOTCOS_MAX_PENDING={self.execution.max_pending}); retry shortly"
        )

    async def _admitted(self, work: Callable[[], Awaitable[T]], deadline_s: float | None) -> T:
        """Bounded waiting: refuse at once beyond max_pending, give up at the deadline.

        `pending` is only touched on the event loop, so it needs no lock. A request that
        times out while queued is cancelled and never runs (the coalescer skips it).
        """
        if self.saturated():
            raise Unavailable(self.overload_message())
        budget = deadline_s if deadline_s is not None else self.execution.default_deadline_s
        self.pending += 1
        try:
            return await (work() if budget is None else asyncio.wait_for(work(), budget))
        except TimeoutError:
            raise Unavailable(
                f"deadline of {(budget or 0) * 1000:g} ms passed before the answer was ready; "
                "retry, or allow more time with X-Deadline-Ms"
            ) from None
        finally:
            self.pending -= 1

    async def search(
        self,
        version: Version,
        vectors: np.ndarray,
        options: SearchOptions,
        field: str,
        deadline_s: float | None = None,
        logged: bool = False,
        shadow: tuple[Version, float] | None = None,
    ) -> SearchResult:
        """Top-k per query under the request's metric and filters (from `offset`, diversified with
        MMR when asked); errors surface as DotcosError. With `logged`, served user queries are
        offered to the query log; with `shadow` (a version and the share sampled), to the shadow."""
        check_options(options, len(vectors), self.limits)
        query = version.query(vectors, options.fetched(), self.limits, field)

        async def work() -> SearchResult:
            if options.include:
                await version.check_known(options.include, "include")
            started = time.perf_counter()
            answer = await version.search(query)
            if self.monitor is not None and self.monitor.measurable(query, version.exact_index(query.metric)):
                self.monitor.offer(version, query, answer)
            if shadow is not None and self.shadows is not None:
                sample = (query.metric, vectors, options, answer, time.perf_counter() - started)
                self.shadows.offer(version, shadow[0], shadow[1], sample)
            return await answered(version, query.metric, answer, options, query.overlay)

        result = await self._admitted(work, deadline_s)
        if logged and self.query_log is not None:
            self.query_log.record(version.collection, query.metric, vectors)
        return result

    async def similar(self, version: Version, query: SimilarQuery, deadline_s: float | None = None) -> SearchResult:
        """The k most similar documents under the metric, never the documents asked about."""
        if query.doc_ids is not None:
            examples = RecommendQuery(list(query.doc_ids), [], AVERAGE_VECTOR, query.options)
            return await self.recommend(version, examples, deadline_s, field="ids")
        if query.doc_id is None:
            assert query.vector is not None
            return await self.search(version, query.vector, query.options, "vector", deadline_s)
        doc_id = query.doc_id
        vector = await self._admitted(lambda: version.vectors_of([doc_id], "id"), deadline_s)
        options = replace(query.options, exclude=[*query.options.exclude, doc_id])
        return await self.search(version, vector, options, "id", deadline_s)

    async def recommend(
        self, version: Version, query: RecommendQuery, deadline_s: float | None = None, field: str = "positive"
    ) -> SearchResult:
        """The k documents the examples recommend under the strategy, never an example given by id."""
        positive = await self._admitted(lambda: example_vectors(version, query.positive, field), deadline_s)
        negative = await self._admitted(lambda: example_vectors(version, query.negative, "negative"), deadline_s)
        check_finite(negative, version.dim, version.collection, "negative")
        options = replace(query.options, exclude=[*query.options.exclude, *query.ids()])
        if query.strategy == AVERAGE_VECTOR:
            return await self.search(version, average_example(positive, negative), options, field, deadline_s)
        check_options(options, len(positive), self.limits)
        search = version.query(positive, options.fetched(), self.limits, field)

        async def work() -> SearchResult:
            answer = await best_score(version, search, positive, negative)
            return await answered(version, search.metric, answer, options, search.overlay)

        return await self._admitted(work, deadline_s)

    async def get(
        self, version: Version, ids: list[str], with_vectors: bool, with_attributes: bool, deadline_s: float | None
    ) -> tuple[list[Doc], list[str]]:
        """The documents of `ids` as they stand now, and the ids the collection does not hold."""
        check_ids(ids)
        if len(ids) > self.limits.max_filter_ids:
            raise TooLarge(f"ids: {len(ids)} ids exceed the limit of {self.limits.max_filter_ids}")
        return await self._admitted(lambda: readback.get(version, ids, with_vectors, with_attributes), deadline_s)

    async def count(self, version: Version, raw_filter: Any, deadline_s: float | None = None) -> int:
        """How many documents pass the filter now."""
        where = version.where(raw_filter, self.limits)
        return await self._admitted(lambda: readback.count(version, where), deadline_s)

    async def scroll(
        self,
        version: Version,
        raw_filter: Any,
        cursor: str | None,
        page: tuple[int, bool, bool],
        deadline_s: float | None,
    ) -> readback.Page:
        """One page of the documents passing the filter, as they stood when the scroll began."""
        where = version.where(raw_filter, self.limits)
        return await self._admitted(lambda: readback.scroll(version, where, raw_filter, cursor, page), deadline_s)

    async def score(
        self, version: Version, query: ScoreQuery, deadline_s: float | None = None
    ) -> tuple[str, list[list[Hit]]]:
        """The exact score of every candidate, in the order given; zero vectors score 0, never NaN."""
        if len(query.ids) != len(query.vectors):
            raise InputError(
                f"ids: {len(query.vectors)} candidate lists expected (one per vector), got {len(query.ids)}"
            )
        check_batch(len(query.vectors), self.limits)
        total = sum(len(candidates) for candidates in query.ids)
        if total > self.limits.max_filter_ids:
            raise TooLarge(f"ids: {total} candidates exceed the limit of {self.limits.max_filter_ids}")
        metric, queries = version.prepare(query.vectors, query.metric, "vectors", zero_has_score=True)
        where = version.where(query.filter, self.limits)
        scored = await self._admitted(lambda: version.score(metric, queries, query.ids, where), deadline_s)
        return metric, [[Hit(c, s) for c, s in pairs] for pairs in scored]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
