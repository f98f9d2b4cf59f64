"""Scatter-gather over a sharded version: every shard answers, answers merge by true score.

Every shard rescoring its candidates exactly is what makes their scores comparable, so the
merged top-k of an exact search equals the unsharded answer. A shard that cannot answer
fails the whole request (503): a partial merge would be a wrong answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from index_builder.contract.errors import InputError
from index_builder.contract.manifest import Manifest
from index_builder.contract.metrics import Metric
from service.core.collection import LoadedVersion, VersionFacts, unknown_ids
from service.core.config import Limits
from service.core.items import ScoreQuery, SimilarQuery, scored_hits
from service.core.search import Hit, SearchOptions, SearchResult
from service.core.shard_ops import known_ids, score_part, search_part, vector_of


class ShardBackend(Protocol):
    """How the shards of one loaded version are reached: in this process or on Ray Serve."""

    async def scatter(self, op: Callable[..., Any], *args: Any) -> list[Any]:
        """op(shard, *args) on every shard, results in shard order; raises the first error."""
        ...

    def retire(self) -> None:
        """Release the shards once no request uses them any more (after a swap)."""
        ...


class LocalShards:
    """Shards loaded in this process; their work runs in the search executor."""

    def __init__(self, parts: list[LoadedVersion], executor: Executor) -> None:
        self.parts = parts
        self.executor = executor

    async def scatter(self, op: Callable[..., Any], *args: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self.executor, op, part, *args)
                                           for part in self.parts)))

    def retire(self) -> None:
        return None


@dataclass(frozen=True)
class ShardedVersion(VersionFacts):
    """A loaded sharded version: its manifest and the backend that reaches its shards."""

    collection: str
    manifest: Manifest
    path: Path
    shards: ShardBackend
    load_seconds: float
    loaded_at: datetime

    def metric_name(self, metric: str | None) -> str:
        return self.default_metric if metric is None else Metric.parse(metric).name


def merge_hits(per_shard: list[list[list[Hit]]], k: int) -> list[list[Hit]]:
    """Per query, the k best hits over all shards by score, ties by id (as unsharded answers)."""
    merged = []
    for answers in zip(*per_shard, strict=True):
        hits = [hit for answer in answers for hit in answer]
        hits.sort(key=lambda h: (-h.score, h.id))
        merged.append(hits[:k])
    return merged


async def _check_known(version: ShardedVersion, ids: list[str], field: str) -> None:
    held = {i for found in await version.shards.scatter(known_ids, ids) for i in found}
    missing = [i for i in ids if i not in held]
    if missing:
        raise unknown_ids(field, version.collection, missing)


async def search(version: ShardedVersion, vectors: np.ndarray, options: SearchOptions, limits: Limits,
                 field: str) -> SearchResult:
    """Top-k over all shards, filters applied inside every shard's search."""
    if options.include:
        await _check_known(version, options.include, "include")
    per_shard = await version.shards.scatter(search_part, vectors, options, limits, field)
    return SearchResult(version.collection, version.version, version.metric_name(options.metric),
                        merge_hits(per_shard, options.k))


async def similar(version: ShardedVersion, query: SimilarQuery, limits: Limits) -> SearchResult:
    """Neighbours of a stored document (found on whichever shard holds it) or of a vector."""
    if (query.doc_id is None) == (query.vector is None):
        raise InputError("id, vector: give exactly one of them")
    if query.doc_id is None:
        assert query.vector is not None
        return await search(version, query.vector, query.options, limits, "vector")
    found = [v for v in await version.shards.scatter(vector_of, query.doc_id) if v is not None]
    if not found:
        raise unknown_ids("id", version.collection, [query.doc_id])
    options = replace(query.options, exclude=[*query.options.exclude, query.doc_id])
    return await search(version, found[0], options, limits, "id")


async def score(version: ShardedVersion, query: ScoreQuery, limits: Limits) -> tuple[str, list[list[Hit]]]:
    """Exact scores of candidates held anywhere in the collection, in the order given."""
    answers = await version.shards.scatter(score_part, query, limits)
    metric = answers[0][0]
    combined: list[list[float | None]] = [[None] * len(c) for c in query.ids]
    for _, scores in answers:
        for merged, shard_scores in zip(combined, scores, strict=True):
            for j, value in enumerate(shard_scores):
                if value is not None:
                    merged[j] = value
    return metric, scored_hits(version.collection, query, combined)
