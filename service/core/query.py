"""What a search asks for, checked once, and how one part answers it.

A request becomes a `Query` once, on the event loop: its options checked against the limits,
its vectors against the collection, and the vectors prepared for the metric (the zero-norm check
reads the prepared form, and every part searches with it). A part's answer is an `Answer` of
arrays; ids appear only when the version makes hits at the top.

Filters run inside the search: small include sets are scored exactly; otherwise FAISS gets an
ID selector in the call's SearchParameters, and a graph search that comes back short (a
selective filter can strand it) is redone exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import faiss
import numpy as np

from index_builder.artifact.errors import InputError
from index_builder.retrieval.ann import ServedIndex, ann_topk
from index_builder.retrieval.faiss_params import EF_SEARCH, NPROBE
from index_builder.retrieval.scoring import MISSING, Prepared, exact_topk, merge_order
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

    @property
    def filtered(self) -> bool:
        return bool(self.exclude) or self.include is not None


@dataclass(frozen=True)
class Query:
    """A checked request: the metric's name, the prepared queries, the options, the collection's
    tuned default knobs for the metric, and the limits a part's search obeys."""

    metric: str
    queries: Prepared
    options: SearchOptions
    defaults: dict[str, int]
    limits: Limits

    def batched(self, queries: Prepared, k: int) -> Query:
        """The same query over other vectors and k (a coalesced batch)."""
        return replace(self, queries=queries, options=replace(self.options, k=k))

    def knob(self, param: str | None) -> int | None:
        """efSearch or nprobe for this search: the request's own, else the tuned default."""
        if param is None:
            return None
        requested = self.options.ef_search if param == EF_SEARCH else self.options.nprobe if param == NPROBE else None
        return requested if requested is not None else self.defaults.get(param)


class Answer(NamedTuple):
    """Top-k per query as arrays: true scores (-inf when missing), version-wide rows (MISSING), ids (None)."""

    scores: np.ndarray
    rows: np.ndarray
    labels: np.ndarray

    @staticmethod
    def merge(answers: list[Answer], k: int) -> Answer:
        """The k best over several parts' answers to the same queries (the one merge; see merge_order)."""
        if len(answers) == 1:
            return answers[0]
        scores = np.concatenate([a.scores for a in answers], axis=1)
        rows = np.concatenate([a.rows for a in answers], axis=1)
        order = merge_order(scores, rows, k)
        labels = np.concatenate([a.labels for a in answers], axis=1)
        line = np.arange(len(rows))[:, None]
        return Answer(scores[line, order], rows[line, order], labels[line, order])

    def split(self, sizes: list[int], ks: list[int]) -> list[Answer]:
        """Consecutive row blocks of `sizes` queries, each cut to its own k (undoes a coalesced batch)."""
        if len(sizes) == 1 and ks[0] >= self.scores.shape[1]:
            return [self]
        out, start = [], 0
        for size, k in zip(sizes, ks, strict=True):
            end = start + size
            out.append(Answer(self.scores[start:end, :k], self.rows[start:end, :k], self.labels[start:end, :k]))
            start = end
        return out


class Hit(NamedTuple):
    """One result: a tuple, because thousands are made per second on the event loop."""

    id: str
    score: float


def to_hits(answer: Answer) -> list[list[Hit]]:
    """Hits per query, MISSING dropped; only runs of equal scores are re-sorted, to order them by id."""
    ties = (answer.scores[:, 1:] == answer.scores[:, :-1]).any(axis=1).tolist()
    out = []
    for scores, labels, tied in zip(answer.scores.tolist(), answer.labels.tolist(), ties, strict=True):
        hits = [Hit(i, s) for s, i in zip(scores, labels, strict=True) if i is not None]
        if tied:
            hits.sort(key=lambda h: (-h.score, h.id))
        out.append(hits)
    return out


def check_batch(rows: int, limits: Limits) -> None:
    if rows > limits.max_batch:
        raise TooLarge(f"vectors: batch of {rows} exceeds the limit of {limits.max_batch}")


def check_options(options: SearchOptions, rows: int, limits: Limits) -> None:
    """Limits that depend on settings, reported with the field name and the limit."""
    if not 1 <= options.k <= limits.max_k:
        raise InputError(f"k: must be between 1 and {limits.max_k}, got {options.k}")
    check_batch(rows, limits)
    for name, ids in (("exclude", options.exclude), ("include", options.include or [])):
        if len(ids) > limits.max_filter_ids:
            raise TooLarge(f"{name}: {len(ids)} ids exceed the limit of {limits.max_filter_ids}")
    if options.ef_search is not None and options.ef_search > limits.max_ef_search:
        raise InputError(f"params.ef_search: at most {limits.max_ef_search}, got {options.ef_search}")


def check_finite(vectors: np.ndarray, dim: int, collection: str, field_name: str) -> None:
    """Dimension and finiteness checks with the field and row named."""
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        got = vectors.shape[-1] if vectors.ndim else 0
        raise InputError(f"{field_name}: dimension {dim} expected by collection {collection!r}, got {got}")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        where = f"{field_name}[{row}]" if len(vectors) > 1 else field_name
        raise InputError(f"{where}: holds NaN or Inf; every value must be a finite number")


def check_zero(queries: Prepared, metric: str, normalizes: bool, field_name: str) -> None:
    """Under normalizing metrics a zero-norm query has no score: say so instead of returning noise."""
    if normalizes:
        zero = queries.zero_rows()
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            where = f"{field_name}[{row}]" if len(queries) > 1 else field_name
            raise InputError(f"{where}: zero-norm vector has no {metric} score")


def _indexed(served: ServedIndex, rows: np.ndarray) -> np.ndarray:
    return rows if served.space.indexes_zero_documents else rows[served.scales[rows] > 0]


def _drop(scores: np.ndarray, rows: np.ndarray, banned: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    keep_r = np.full((len(rows), k), MISSING, dtype=np.int64)
    for i in range(len(rows)):
        ok = (rows[i] != MISSING) & ~np.isin(rows[i], banned)
        s, r = scores[i][ok][:k], rows[i][ok][:k]
        keep_s[i, : len(s)], keep_r[i, : len(r)] = s, r
    return keep_s, keep_r


def _exact(
    served: ServedIndex, queries: Prepared, k: int, pool: np.ndarray | None, banned: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if pool is not None:
        return exact_topk(served.space, queries, served.vectors, served.scales, k, candidates=pool)
    scores, rows = exact_topk(served.space, queries, served.vectors, served.scales, k + len(banned))
    return _drop(scores, rows, banned, k)


def _selector(pool: np.ndarray | None, banned: np.ndarray) -> list[faiss.IDSelector]:
    """The selector chain (outermost last); the list keeps inner selectors alive during the call."""
    if pool is not None:
        return [faiss.IDSelectorBatch(pool)]
    if len(banned):
        inner = faiss.IDSelectorBatch(banned)
        return [inner, faiss.IDSelectorNot(inner)]
    return []


def run_search(
    served: ServedIndex, query: Query, banned: np.ndarray, include: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, local rows) of one part's index under the query's filters (banned and included
    local rows), complete whenever k eligible documents exist in the part."""
    k, options, queries = query.options.k, query.options, query.queries
    if not options.filtered:
        if options.exact and not served.exact:
            return exact_topk(served.space, queries, served.vectors, served.scales, k)
        return ann_topk(served, queries, k, query.knob(served.param))
    pool = None if include is None else _indexed(served, np.setdiff1d(include, banned))
    eligible = len(pool) if pool is not None else served.ntotal - len(_indexed(served, banned))
    small_pool = pool is not None and len(pool) <= query.limits.exact_filter_threshold
    if (options.exact and not served.exact) or small_pool:
        return _exact(served, queries, k, pool, banned)
    value = query.knob(served.param)
    if served.param == EF_SEARCH and len(banned):
        value = min(max(value or 0, k) + len(banned), query.limits.max_ef_search)
    chain = _selector(pool, banned)
    scores, rows = ann_topk(served, queries, k, value, chain[-1] if chain else None)
    found = (rows != MISSING).sum(axis=1)
    if (found < min(k, eligible)).any():
        return _exact(served, queries, k, pool, banned)
    return scores, rows
