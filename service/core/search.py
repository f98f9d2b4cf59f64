"""Top-k search over a loaded version: metric per request, filters inside the search, exact mode.

Filters never post-filter a short list. `include` with few eligible rows, and `exact`,
score exactly the eligible rows; otherwise FAISS searches with an IDSelector in per-call
SearchParameters, and if it still returns fewer than k while k eligible documents exist
(graph searches can strand a selective filter), the query is answered exactly instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import faiss
import numpy as np

from index_builder.contract.errors import InputError
from index_builder.contract.faiss_index import EF_SEARCH, NPROBE
from index_builder.contract.scoring import MISSING, exact_topk
from index_builder.contract.search import ServedIndex, ann_topk
from service.core.collection import LoadedVersion
from service.core.config import Limits
from service.core.errors import TooLarge


@dataclass(frozen=True)
class SearchOptions:
    """Everything a search request asks for besides the query vectors."""

    k: int = 10
    metric: str | None = None
    exclude: list[str] = field(default_factory=list)
    include: list[str] | None = None
    exact: bool = False
    nprobe: int | None = None
    ef_search: int | None = None


class Hit(NamedTuple):
    """One result: a tuple, because thousands are made per second on the event loop."""

    id: str
    score: float


@dataclass(frozen=True)
class SearchResult:
    collection: str
    version: str
    metric: str
    hits: list[list[Hit]]


def check_options(options: SearchOptions, batch: int, limits: Limits) -> None:
    """Limits that depend on settings, reported with the field name and the limit."""
    if not 1 <= options.k <= limits.max_k:
        raise InputError(f"k: must be between 1 and {limits.max_k}, got {options.k}")
    if batch > limits.max_batch:
        raise TooLarge(f"vectors: batch of {batch} exceeds the limit of {limits.max_batch}")
    for name, ids in (("exclude", options.exclude), ("include", options.include or [])):
        if len(ids) > limits.max_filter_ids:
            raise TooLarge(f"{name}: {len(ids)} ids exceed the limit of {limits.max_filter_ids}")
    if options.ef_search is not None and options.ef_search > limits.max_ef_search:
        raise InputError(f"params.ef_search: at most {limits.max_ef_search}, got {options.ef_search}")


def check_queries(served: ServedIndex, vectors: np.ndarray, field_name: str) -> None:
    """Under normalizing metrics a zero-norm query has no score: say so instead of returning noise."""
    if served.space.normalizes_queries:
        zero = ~np.any(served.space.prepare_queries(vectors), axis=1)
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            where = f"{field_name}[{row}]" if len(vectors) > 1 else field_name
            raise InputError(f"{where}: zero-norm vector has no {served.space.name} score")


def _indexed(served: ServedIndex, rows: np.ndarray) -> np.ndarray:
    return rows if served.space.indexes_zero_documents else rows[served.scales[rows] > 0]


def _knob(served: ServedIndex, options: SearchOptions, version: LoadedVersion) -> int | None:
    param = served.param
    requested = {EF_SEARCH: options.ef_search, NPROBE: options.nprobe}.get(param or "")
    if requested is not None:
        return requested
    entry = version.manifest.metrics[served.space.name].index
    return entry.search_params.get(param) if param else None


def _drop(scores: np.ndarray, rows: np.ndarray, banned: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    keep_r = np.full((len(rows), k), MISSING, dtype=np.int64)
    for i in range(len(rows)):
        ok = (rows[i] != MISSING) & ~np.isin(rows[i], banned)
        s, r = scores[i][ok][:k], rows[i][ok][:k]
        keep_s[i, : len(s)], keep_r[i, : len(r)] = s, r
    return keep_s, keep_r


def _exact(served: ServedIndex, vectors: np.ndarray, k: int, pool: np.ndarray | None,
           banned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if pool is not None:
        return exact_topk(served.space, vectors, served.vectors, served.scales, k, candidates=pool)
    scores, rows = exact_topk(served.space, vectors, served.vectors, served.scales, k + len(banned))
    return _drop(scores, rows, banned, k)


def _selector(pool: np.ndarray | None, banned: np.ndarray) -> list[faiss.IDSelector]:
    """The selector chain (outermost last); the list keeps inner selectors alive during the call."""
    if pool is not None:
        return [faiss.IDSelectorBatch(pool)]
    if len(banned):
        inner = faiss.IDSelectorBatch(banned)
        return [inner, faiss.IDSelectorNot(inner)]
    return []


def run_search(version: LoadedVersion, served: ServedIndex, vectors: np.ndarray, options: SearchOptions,
               limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) per query under the request's metric and filters."""
    k = options.k
    if not options.exclude and options.include is None:
        if options.exact and not served.exact:
            return exact_topk(served.space, vectors, served.vectors, served.scales, k)
        return ann_topk(served, vectors, k, _knob(served, options, version))
    return _filtered(version, served, vectors, options, limits)


def _filtered(version: LoadedVersion, served: ServedIndex, vectors: np.ndarray, options: SearchOptions,
              limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """Search with include/exclude applied inside the search, complete whenever k eligible exist."""
    k = options.k
    banned = version.known_rows(options.exclude)
    pool = None
    if options.include is not None:
        pool = _indexed(served, np.setdiff1d(version.rows_for(options.include, "include"), banned))
    eligible = len(pool) if pool is not None else served.ntotal - len(_indexed(served, banned))
    small_pool = pool is not None and len(pool) <= limits.exact_filter_threshold
    if (options.exact and not served.exact) or small_pool:
        return _exact(served, vectors, k, pool, banned)
    value = _knob(served, options, version)
    if served.param == EF_SEARCH and len(banned):
        value = min(max(value or 0, k) + len(banned), limits.max_ef_search)
    chain = _selector(pool, banned)
    scores, rows = ann_topk(served, vectors, k, value, chain[-1] if chain else None)
    found = (rows != MISSING).sum(axis=1)
    if (found < min(k, eligible)).any():
        return _exact(served, vectors, k, pool, banned)
    return scores, rows


def validate(version: LoadedVersion, vectors: np.ndarray, options: SearchOptions, limits: Limits,
             field_name: str) -> ServedIndex:
    """Every check that needs no search; returns the index the request's metric uses."""
    check_options(options, len(vectors), limits)
    version.check_vectors(vectors, field_name)
    served = version.served(options.metric)
    check_queries(served, vectors, field_name)
    return served


def search(version: LoadedVersion, vectors: np.ndarray, options: SearchOptions, limits: Limits,
           field_name: str = "vector") -> SearchResult:
    """Validate, search and turn rows into ids; ties are broken by id."""
    served = validate(version, vectors, options, limits, field_name)
    scores, rows = run_search(version, served, vectors, options, limits)
    return SearchResult(version.collection, version.version, served.space.name,
                        to_hits(version, scores, rows))


def to_hits(version: LoadedVersion, scores: np.ndarray, rows: np.ndarray) -> list[list[Hit]]:
    """Rows (sorted by score descending, as every search returns them) to ids, dropping MISSING;
    only rows with equal scores are re-sorted, to break the tie by id."""
    ids = version.ids
    ties = (scores[:, 1:] == scores[:, :-1]).any(axis=1).tolist()
    out = []
    for score_row, id_row, tied in zip(scores.tolist(), rows.tolist(), ties, strict=True):
        hits = [Hit(ids[r], s) for s, r in zip(score_row, id_row, strict=True) if r != MISSING]
        if tied:
            hits.sort(key=lambda h: (-h.score, h.id))
        out.append(hits)
    return out
