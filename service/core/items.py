"""Item-to-item neighbours (`/similar`) and exact scores of given candidates (`/score`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from index_builder.contract.errors import InputError
from index_builder.contract.scoring import score_rows
from service.core.collection import LoadedVersion, unknown_ids
from service.core.config import Limits
from service.core.errors import TooLarge
from service.core.search import Hit, SearchOptions, SearchResult, run_search, to_hits, validate


@dataclass(frozen=True)
class SimilarQuery:
    """Neighbours of a stored document (`doc_id`) or of a document vector not in the collection."""

    doc_id: str | None
    vector: np.ndarray | None
    options: SearchOptions


def similar(version: LoadedVersion, query: SimilarQuery, limits: Limits) -> SearchResult:
    """The k most similar documents under the metric, never the document itself."""
    if (query.doc_id is None) == (query.vector is None):
        raise InputError("id, vector: give exactly one of them")
    options = query.options
    if query.doc_id is not None:
        row = int(version.rows_for([query.doc_id], "id")[0])
        vectors = np.asarray(version.vectors[row : row + 1], dtype=np.float32)
        options = replace(options, exclude=[*options.exclude, query.doc_id])
        field = "id"
    else:
        assert query.vector is not None
        vectors, field = query.vector, "vector"
    served = validate(version, vectors, options, limits, field)
    scores, rows = run_search(version, served, vectors, options, limits)
    return SearchResult(version.collection, version.version, served.space.name, to_hits(version, scores, rows))


@dataclass(frozen=True)
class ScoreQuery:
    """One candidate list per query vector; `metric` None means the collection's first."""

    vectors: np.ndarray
    ids: list[list[str]]
    metric: str | None


def score_field(query: ScoreQuery, i: int) -> str:
    return f"ids[{i}]" if len(query.ids) > 1 else "ids"


def score_known(version: LoadedVersion, query: ScoreQuery, limits: Limits) -> tuple[str, list[list[float | None]]]:
    """Exact scores of the candidates this version holds, in the order given (None for the others)."""
    if len(query.ids) != len(query.vectors):
        raise InputError(f"ids: {len(query.vectors)} candidate lists expected (one per vector), got {len(query.ids)}")
    if len(query.vectors) > limits.max_batch:
        raise TooLarge(f"vectors: batch of {len(query.vectors)} exceeds the limit of {limits.max_batch}")
    total = sum(len(candidates) for candidates in query.ids)
    if total > limits.max_filter_ids:
        raise TooLarge(f"ids: {total} candidates exceed the limit of {limits.max_filter_ids}")
    version.check_vectors(query.vectors, "vectors")
    served = version.served(query.metric)
    out: list[list[float | None]] = []
    for i, candidates in enumerate(query.ids):
        known = [c for c in candidates if c in version.rows_by_id]
        rows = version.rows_for(known, score_field(query, i))
        scores = score_rows(served.space, query.vectors[i : i + 1], served.vectors, served.scales, rows[None, :])
        by_id = dict(zip(known, scores[0].tolist(), strict=True))
        out.append([by_id.get(c) for c in candidates])
    return served.space.name, out


def scored_hits(collection: str, query: ScoreQuery, scores: list[list[float | None]]) -> list[list[Hit]]:
    """Candidates with their scores, or NotFoundError naming the first list's unknown ids."""
    out = []
    for i, (candidates, values) in enumerate(zip(query.ids, scores, strict=True)):
        missing = [c for c, v in zip(candidates, values, strict=True) if v is None]
        if missing:
            raise unknown_ids(score_field(query, i), collection, missing)
        out.append([Hit(c, float(v)) for c, v in zip(candidates, values, strict=True) if v is not None])
    return out


def score(version: LoadedVersion, query: ScoreQuery, limits: Limits) -> tuple[str, list[list[Hit]]]:
    """The exact score of every candidate, in the order given; zero vectors score 0, never NaN."""
    metric, scores = score_known(version, query, limits)
    return metric, scored_hits(version.collection, query, scores)
