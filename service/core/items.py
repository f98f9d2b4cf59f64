"""Item-to-item neighbours (`/similar`) and exact scores of given candidates (`/score`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from index_builder.contract.errors import InputError
from index_builder.contract.scoring import score_rows
from service.core.collection import LoadedVersion
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


def score(version: LoadedVersion, query: ScoreQuery, limits: Limits) -> tuple[str, list[list[Hit]]]:
    """The exact score of every candidate, in the order given; zero vectors score 0, never NaN."""
    if len(query.ids) != len(query.vectors):
        raise InputError(f"ids: {len(query.vectors)} candidate lists expected (one per vector), got {len(query.ids)}")
    if len(query.vectors) > limits.max_batch:
        raise TooLarge(f"vectors: batch of {len(query.vectors)} exceeds the limit of {limits.max_batch}")
    total = sum(len(candidates) for candidates in query.ids)
    if total > limits.max_filter_ids:
        raise TooLarge(f"ids: {total} candidates exceed the limit of {limits.max_filter_ids}")
    version.check_vectors(query.vectors, "vectors")
    served = version.served(query.metric)
    out: list[list[Hit]] = []
    for i, candidates in enumerate(query.ids):
        if not candidates:
            out.append([])
            continue
        rows = version.rows_for(candidates, f"ids[{i}]" if len(query.ids) > 1 else "ids")
        scores = score_rows(served.space, query.vectors[i : i + 1], served.vectors, served.scales, rows[None, :])
        out.append([Hit(doc_id, float(s)) for doc_id, s in zip(candidates, scores[0].tolist(), strict=True)])
    return served.space.name, out
