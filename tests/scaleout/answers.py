"""Answers of a published version through the service core, sharded or not, for comparisons."""

from __future__ import annotations

import numpy as np

from service.core.query import SearchOptions
from service.core.searcher import ScoreQuery, SimilarQuery
from service.core.version import Version
from tests.core_calls import load, score, search, similar

__all__ = ["load", "top_k", "assert_same_answers"]


def top_k(version: Version, queries: np.ndarray, options: SearchOptions) -> list[list[tuple[str, float]]]:
    """(id, score) lists per query, through the same code paths the HTTP routes use."""
    return [[(h.id, h.score) for h in row] for row in search(version, queries, options, field="vectors").hits]


def neighbours(version: Version, query: SimilarQuery) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in similar(version, query).hits[0]]


def assert_same_answers(sharded: Version, single: Version, queries: np.ndarray, metric: str, ids: list[str]) -> None:
    """Unfiltered, excluded, included, filtered, exact, /similar and /score answers are identical."""
    excluded = ids[::7]
    included = ids[::11]
    tree = {"should": [{"has_id": ids[::5]}, {"has_id": ids[1::9]}], "must_not": [{"has_id": ids[::15]}]}
    for options in (
        SearchOptions(k=10, metric=metric),
        SearchOptions(k=10, metric=metric, exclude=excluded),
        SearchOptions(k=10, metric=metric, include=included),
        SearchOptions(k=10, metric=metric, filter=tree, exclude=excluded[:20]),
        SearchOptions(k=25, metric=metric, exact=True),
    ):
        assert top_k(sharded, queries, options) == top_k(single, queries, options), options
    for query in (
        SimilarQuery(doc_id=ids[42], vector=None, options=SearchOptions(k=5, metric=metric)),
        SimilarQuery(doc_id=None, vector=queries[:1], options=SearchOptions(k=5, metric=metric)),
    ):
        assert neighbours(sharded, query) == neighbours(single, query)
    candidates = ScoreQuery(vectors=queries[:2], ids=[ids[:30:3], ids[-5:]], metric=metric)
    assert score(sharded, candidates) == score(single, candidates)
    filtered = ScoreQuery(
        vectors=queries[:1], ids=[ids[:40]], metric=metric, filter={"must_not": [{"has_id": ids[:40:3]}]}
    )
    assert score(sharded, filtered) == score(single, filtered)
    assert [i for i, _ in score(single, filtered)[0]] == [i for n, i in enumerate(ids[:40]) if n % 3]
