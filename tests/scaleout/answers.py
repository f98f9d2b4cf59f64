"""Answers of a published version through the service core, sharded or not, for comparisons."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from index_builder.contract.layout import read_current
from service.core import gather
from service.core.config import Limits
from service.core.gather import ShardedVersion
from service.core.items import ScoreQuery, SimilarQuery, score, similar
from service.core.loader import LocalLoader, Served
from service.core.search import SearchOptions, search

EXECUTOR = ThreadPoolExecutor(2)
LIMITS = Limits()


def load(root: Path, name: str) -> Served:
    return LocalLoader(root, EXECUTOR)(name, read_current(root, name))


def top_k(version: Served, queries: np.ndarray, options: SearchOptions) -> list[list[tuple[str, float]]]:
    """(id, score) lists per query, through the same code paths the HTTP routes use."""
    if isinstance(version, ShardedVersion):
        hits = asyncio.run(gather.search(version, queries, options, LIMITS, "vectors")).hits
    else:
        hits = search(version, queries, options, LIMITS, "vectors").hits
    return [[(h.id, h.score) for h in row] for row in hits]


def neighbours(version: Served, query: SimilarQuery) -> list[tuple[str, float]]:
    if isinstance(version, ShardedVersion):
        hits = asyncio.run(gather.similar(version, query, LIMITS)).hits[0]
    else:
        hits = similar(version, query, LIMITS).hits[0]
    return [(h.id, h.score) for h in hits]


def scores(version: Served, query: ScoreQuery) -> list[list[tuple[str, float]]]:
    if isinstance(version, ShardedVersion):
        _, lists = asyncio.run(gather.score(version, query, LIMITS))
    else:
        _, lists = score(version, query, LIMITS)
    return [[(h.id, h.score) for h in row] for row in lists]


def assert_same_answers(sharded: Served, single: Served, queries: np.ndarray, metric: str, ids: list[str]) -> None:
    """Unfiltered, excluded, included, exact, /similar and /score answers are identical."""
    excluded = ids[::7]
    included = ids[::11]
    for options in (SearchOptions(k=10, metric=metric), SearchOptions(k=10, metric=metric, exclude=excluded),
                    SearchOptions(k=10, metric=metric, include=included),
                    SearchOptions(k=25, metric=metric, exact=True)):
        assert top_k(sharded, queries, options) == top_k(single, queries, options), options
    for query in (SimilarQuery(doc_id=ids[42], vector=None, options=SearchOptions(k=5, metric=metric)),
                  SimilarQuery(doc_id=None, vector=queries[:1], options=SearchOptions(k=5, metric=metric))):
        assert neighbours(sharded, query) == neighbours(single, query)
    candidates = ScoreQuery(vectors=queries[:2], ids=[ids[:30:3], ids[-5:]], metric=metric)
    assert scores(sharded, candidates) == scores(single, candidates)
